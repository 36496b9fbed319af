"""U2PL as a method (docs/methods/u2pl.md): the phases, the teacher, the losses, the queues in checkpoints,
and one process against two."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from engine_runs import REPO, subprocess_env, train_command
from semiseg.methods.interface import StepContext
from test_methods import fake_batch, make

CTX_WARMUP = StepContext(5, 1000, 100)  # inside the one-epoch warm-up (I = 100)
CTX_SEMI = StepContext(100, 1000, 100)  # the first semi-supervised step


def test_warmup_trains_the_student_alone():
    method = make("u2pl")
    method.train()
    teacher_before = {k: v.clone() for k, v in method.teacher.state_dict().items()}
    loss, logs = method.training_step(fake_batch(method), CTX_WARMUP)
    assert set(logs) == {"loss_s"} and torch.equal(loss.detach(), logs["loss_s"])
    loss.backward()
    rep_head = [p for n, p in method.model.named_parameters() if n.startswith("heads.representation")]
    assert rep_head and all(p.grad is None for p in rep_head)  # unused until the contrastive loss starts
    assert method.model.decoder.classifier.weight.grad is not None
    method.after_step()
    assert not bool(method.semi_started)
    for key, value in method.teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), key


def test_first_semi_step_copies_the_student_then_follows_it():
    method = make("u2pl")
    method.train()
    with torch.no_grad():  # make the student differ from the teacher's initial copy
        for p in method.model.parameters():
            p.add_(0.01)
    loss, logs = method.training_step(fake_batch(method), CTX_SEMI)
    assert bool(method.semi_started) and {"loss_u", "loss_c", "alpha"} <= set(logs)
    student = method.model.state_dict()
    for key, value in method.teacher.net.state_dict().items():
        if "running" not in key and "num_batches" not in key:  # BN statistics moved by the train-mode forwards
            assert torch.equal(value, student[key]), key
    method.after_step()  # λ_0 = 0: still the student's parameters
    assert int(method.teacher.updates) == 1
    assert method.teacher.current_decay() == pytest.approx(0.5)


def test_alpha_follows_training_progress():
    method = make("u2pl")
    method.train()
    batch = fake_batch(method)
    for step, alpha in ((100, 18.0), (500, 10.0), (999, 0.02)):
        _, logs = method.training_step(batch, StepContext(step, 1000, 100))
        assert float(logs["alpha"]) == pytest.approx(alpha, abs=1e-4)


def test_unsupervised_loss_normalisations_by_hand():
    method = make("u2pl")
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25, 1e-9, 1e-9], [0.25, 0.5, 0.25, 1e-9, 1e-9],
                                     [0.25, 0.25, 0.5, 1e-9, 1e-9], [0.5, 0.5, 1e-9, 1e-9, 1e-9]]))
    logits = logits.T.reshape(1, 5, 2, 2)
    pseudo = torch.tensor([[[0, 1], [0, 1]]])  # CE: log 2, log 2, log 4, log 2
    keep = torch.tensor([[[True, True], [True, False]]])
    valid = torch.tensor([[[True, True], [True, True]]])
    kept = 2 * torch.log(torch.tensor(2.0)) + torch.log(torch.tensor(4.0))
    assert method.unsupervised_loss(logits, pseudo, keep.float(), valid).item() == pytest.approx(kept.item() / 4, rel=1e-5)
    method.params.unsup_norm = "released"  # N_all · Σ kept / N_kept²
    assert method.unsupervised_loss(logits, pseudo, keep.float(), valid).item() == pytest.approx(4 * kept.item() / 9,
                                                                                          rel=1e-5)


def test_cutmix_coin_is_a_function_of_the_step_with_the_configured_rate():
    method = make("u2pl")
    coins = [method._cutmix_coin(StepContext(t, 10_000, 100)) for t in range(2000)]
    assert coins == [method._cutmix_coin(StepContext(t, 10_000, 100)) for t in range(2000)]
    assert 0.45 < sum(coins) / len(coins) < 0.55
    method.params.cutmix_prob = 0.0
    assert not any(method._cutmix_coin(StepContext(t, 10_000, 100)) for t in range(200))


def test_queues_fill_and_travel_in_the_state():
    method = make("u2pl")
    method.train()
    method.training_step(fake_batch(method), CTX_SEMI)
    counts = method.queues.counts()
    assert counts.sum() > 0  # random networks: plenty of unreliable pixels and top-3 mistakes
    state = method.state_dict()
    assert {"queues.storage", "queues.fill_counts", "queues.write_pointers", "semi_started"} <= set(state)
    other = make("u2pl", seed=5)
    other.load_state_dict(state)
    assert torch.equal(other.queues.counts(), counts) and bool(other.semi_started)


def test_alias_first_epoch_keeps_teacher_parameters_equal_to_the_student():
    method = make("u2pl", variant="released")
    method.train()
    batch = fake_batch(method)
    for step in (100, 101):  # the first semi-supervised epoch
        with torch.no_grad():
            for p in method.model.parameters():
                p.add_(0.01)
        method.training_step(batch, StepContext(step, 1000, 100))
        for p_t, p_s in zip(method.teacher.net.parameters(), method.model.parameters()):
            assert torch.equal(p_t, p_s)
        method.after_step()


def test_predict_uses_the_eval_mode_teacher():
    method = make("u2pl")
    method.eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        for p in method.teacher.net.parameters():
            p.mul_(0.5)
        assert torch.allclose(method.predict(x), method.teacher.net.eval()(x))
        assert not torch.allclose(method.predict(x), method.model(x))


def test_low_rank_must_be_below_high_rank():
    from semiseg.errors import SemisegError
    from semiseg.methods.u2pl import U2PL, U2PLParams

    with pytest.raises(SemisegError, match="low_rank"):
        U2PL(make("u2pl").model, U2PLParams(low_rank=5, high_rank=5))


RANK_SCRIPT = """
import sys, torch
from semiseg.cli import main
from semiseg import collectives
from semiseg.methods.u2pl import U2PL
from semiseg.models.heads import RepresentationHead

# the representation head's dropout draws from each process's own stream (in the train-mode teacher too):
# without it the two runs compute the same features
RepresentationHead.__init__.__defaults__ = (0.0,)
out = sys.argv.pop(1)
original = U2PL.after_step
def after_step(self):
    original(self)
    step = int(self.teacher.updates)
    torch.save(self.queues.state_dict(), f"{out}/queues_rank{collectives.rank()}_step{step}.pt")
U2PL.after_step = after_step
sys.exit(main(sys.argv[1:]))
"""

# the queues of one process and of two (total batch 4) after the first step: same global batch, percentiles
# over it, SyncBN, the same initial teacher; no CutMix (its partner is taken within a process's local batch:
# docs/distributed.md). Later steps differ legitimately: each rank samples its own anchors and negatives, so
# the contrastive gradients, and with them the students and teachers, are not those of one process.
U2PL_ARGS = ["method.name=u2pl", "model.heads.representation=8", "method.warmup_epochs=0",
             "method.cutmix_prob=0", "method.queue_size=4000", "method.queue_size_background=6000",
             "method.num_anchors=8", "method.num_negatives=4", "train.total_batch_size=4", "train.total_iters=3",
             "data.synthetic.image_size=64", "data.crop_size=64", "train.ddp_find_unused_parameters=true"]


@pytest.mark.slow
def test_queues_equal_on_both_ranks_and_to_one_process(tmp_path):
    script = tmp_path / "dump_queues.py"
    script.write_text(RANK_SCRIPT)
    for name, nproc in (("two", 2), ("one", 1)):
        (tmp_path / name).mkdir()
        command = train_command(*U2PL_ARGS, f"output_dir={tmp_path / name / 'run'}", nproc=nproc, script=str(script))
        command.insert(command.index(str(script)) + 1, str(tmp_path / name))
        done = subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    for step in (1, 2, 3):
        rank0, rank1 = (torch.load(tmp_path / "two" / f"queues_rank{r}_step{step}.pt") for r in (0, 1))
        for key in rank0:
            assert torch.equal(rank0[key], rank1[key]), (step, key)  # identical on both ranks at every step
    one = torch.load(tmp_path / "one" / "queues_rank0_step1.pt")
    rank0 = torch.load(tmp_path / "two" / "queues_rank0_step1.pt")
    assert one["fill_counts"].sum() > 0
    assert torch.equal(rank0["fill_counts"], one["fill_counts"]) and torch.equal(rank0["write_pointers"],
                                                                                   one["write_pointers"])
    torch.testing.assert_close(rank0["storage"], one["storage"], atol=1e-4, rtol=0)
    saved = torch.load(tmp_path / "one" / "run" / "latest.pt", weights_only=True)["method"]
    last = torch.load(tmp_path / "one" / "queues_rank0_step3.pt")
    assert torch.equal(saved["queues.storage"], last["storage"])  # the checkpoint holds the queues


def test_a_step_without_anchors_gives_a_zero_contrastive_loss_that_backpropagates():
    """δ_p = 1: no pixel is an anchor, so no class draws negatives (the speed benchmark's random networks
    meet this on their first steps)."""
    method = make("u2pl")
    method.params.delta_p = 1.0
    method.train()
    loss, logs = method.training_step(fake_batch(method), CTX_SEMI)
    assert float(logs["loss_c"]) == 0.0 and torch.isfinite(loss)
    loss.backward()
    assert method.model.decoder.classifier.weight.grad is not None
    rep_head = [p for n, p in method.model.named_parameters() if n.startswith("heads.representation")]
    assert rep_head and all(p.grad is not None for p in rep_head)  # zeros, not None: DDP needs every gradient
