"""Acceptance test of the method interface (docs/method_interface.md).

A method defined only in this file, with everything the seed methods need from the engine:
- a second optimiser (Adam at a constant rate) on a small discriminator, stepped after the segmentor;
- an extra network head (the per-pixel variance head, switched on by `model.heads.variance`);
- its own CutMix box generator, declared in its views and drawn by the data pipeline (inside the band
  the strong view shows the image's own weak view, so no sample depends on another one of its pass,
  and one process and two give the same losses; a partner from the pass would differ between them);
- a queue of keys in a registered buffer, gathered over ranks with `semiseg.collectives`.
It trains on the synthetic preset, resumes bitwise after SIGKILL, and under `torchrun
--nproc-per-node=2` logs the losses of one process, with no change to `engine/` or `data/`.

Run as a script (`python tests/test_method_interface.py train ...`, also under torchrun) it is the
`semiseg` command line with this method registered.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from semiseg import collectives
from semiseg.components.cutmix import mix
from semiseg.components.losses import masked_ce
from semiseg.components.selection import pseudo_labels, select_by_threshold
from semiseg.labels import IGNORE_INDEX
from semiseg.methods import Method, MethodParams, Update, Views
from semiseg.registry import METHODS

NAME = "toy_adversarial"


class VerticalBand:
    """A box generator of its own: a band of a third of the columns at a uniform offset."""

    def __call__(self, height: int, width: int) -> torch.Tensor:
        band = max(1, width // 3)
        x0 = int(torch.randint(0, width - band + 1, ()))
        mask = torch.zeros(height, width, dtype=torch.bool)
        mask[:, x0:x0 + band] = True
        return mask


class Discriminator(nn.Module):
    """Class-probability maps -> one real/fake logit per image."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(num_classes, 8, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
                                  nn.Conv2d(8, 1, 3, padding=1))

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        return self.body(probs).mean(dim=(1, 2, 3))


@dataclass
class ToyAdversarialParams(MethodParams):
    threshold: float = 0.0  # τ of the strong view's pseudo-labels
    adversarial_weight: float = 0.01  # λ_adv of the segmentor's "looks real" term
    contrast_weight: float = 0.1  # λ_c of the push away from the queued keys
    variance_weight: float = 0.1  # λ_σ of the variance head's regression to 1 − q
    discriminator_lr: float = 1e-3  # Adam, constant rate
    queue_size: int = 16  # keys in the ring buffer


class ToyAdversarial(Method):
    Params = ToyAdversarialParams
    required_heads = ("variance",)

    def __init__(self, model, params: ToyAdversarialParams):
        super().__init__(model, params)
        self.discriminator = Discriminator(model.num_classes)
        dim = model.decoder.classifier.in_channels
        self.register_buffer("queue", torch.zeros(params.queue_size, dim))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_count", torch.zeros((), dtype=torch.long))
        self._fakes: list[torch.Tensor] = []  # the segmentor's unlabeled predictions, for the discriminator

    def views(self) -> Views:
        return Views(unlabeled=True, strong=1, box=VerticalBand())

    def updates(self, train_cfg):
        segmentor = super().updates(train_cfg)[0]
        adam = torch.optim.Adam(self.discriminator.parameters(), lr=self.params.discriminator_lr, betas=(0.5, 0.999))
        return [segmentor, Update("discriminator", adam, [self.discriminator], self.discriminator_step, "constant")]

    @torch.no_grad()
    def _push(self, keys: torch.Tensor) -> None:
        keys = collectives.all_gather_rows(keys)[-self.queue.shape[0]:]
        index = (self.queue_ptr + torch.arange(len(keys), device=keys.device)) % self.queue.shape[0]
        self.queue[index] = keys.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + len(keys)) % self.queue.shape[0])
        self.queue_count.copy_(torch.clamp(self.queue_count + len(keys), max=self.queue.shape[0]))

    def training_step(self, batch, ctx):
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        x_l, y_l, n = labeled["image"], labeled["mask"], len(labeled["image"])
        x_w, valid, box = unlabeled["image_w"], unlabeled["valid"], unlabeled["box"]
        p = self.params

        out = self.model(torch.cat([x_l, x_w]), outputs=("logits", "features", "variance"))
        z_l, z_w = out["logits"][:n], out["logits"][n:]
        pseudo, confidence = pseudo_labels(z_w)
        z_s = self.model(mix(unlabeled["image_s"][:, 0], box[:, 0], partner=x_w))
        loss_x = self.supervised_loss(z_l, y_l)
        loss_s = masked_ce(z_s, pseudo, select_by_threshold(confidence, p.threshold), valid)

        fake = z_w.softmax(dim=1)
        loss_adv = F.binary_cross_entropy_with_logits(self.discriminator(fake), torch.ones(len(fake)))
        self._fakes.append(fake.detach())

        keys = F.normalize(out["features"][n:].mean(dim=(2, 3)), dim=1)
        self._push(keys)  # before use, as U2PL updates its queues
        queued = self.queue[: int(self.queue_count)]
        loss_c = torch.logsumexp(keys @ queued.T / 0.5, dim=1).mean()
        loss_var = ((out["variance"][n:, 0] - (1 - confidence)) ** 2).mean()

        loss = loss_x + loss_s + p.adversarial_weight * loss_adv + p.contrast_weight * loss_c \
            + p.variance_weight * loss_var
        return loss, {"loss_x": loss_x.detach(), "loss_s": loss_s.detach(), "loss_adv": loss_adv.detach(),
                      "loss_c": loss_c.detach(), "loss_var": loss_var.detach()}

    def discriminator_step(self, batch, ctx):
        fake = self._fakes.pop(0)
        mask = batch["labeled"]["mask"]
        real = F.one_hot(torch.where(mask == IGNORE_INDEX, 0, mask), fake.shape[1]).permute(0, 3, 1, 2).float()
        d_real, d_fake = self.discriminator(real), self.discriminator(fake)
        loss_d = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                  + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))) / 2
        return loss_d, {"loss_d": loss_d.detach()}


@pytest.fixture
def registered(monkeypatch):
    """The toy method in the registry for one test only (other tests see the package's methods)."""
    monkeypatch.setitem(METHODS._items, NAME, ToyAdversarial)


# -- the tests -------------------------------------------------------------------------------------------
TOY = [f"method.name={NAME}", "model.heads.variance=true"]


def _command(*args, nproc: int = 1):
    from engine_runs import train_command

    return train_command(*TOY, *args, nproc=nproc, script=__file__)


def _run(*args, nproc: int = 1):
    from engine_runs import REPO, subprocess_env

    proc = subprocess.run(_command(*args, nproc=nproc), cwd=REPO, env=subprocess_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@contextlib.contextmanager
def _alongside(command, log_path):
    """Run `command` (from the repository, its output in `log_path`) while the block runs; killed when the block
    fails, waited for at the end, then its exit status checked."""
    from engine_runs import REPO, subprocess_env

    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT,
                                   text=True)
        try:
            yield process
        except BaseException:
            process.kill()
            raise
        finally:
            process.wait(timeout=300)
    assert process.returncode == 0, log_path.read_text()[-3000:]


def _records(output_dir, kind="train"):
    return [r for r in map(json.loads, (output_dir / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


@pytest.mark.slow
def test_toy_method_trains_and_is_killed_and_resumed_bitwise(tmp_path):
    from engine_runs import final_state, kill_at_checkpoint

    args = ["deterministic=true", "train.total_batch_size=4", "train.total_iters=6", "train.checkpoint_every=2",
            "train.eval_every=3", "--resume", "auto"]
    reference = tmp_path / "reference"
    # the uninterrupted run alongside the killed one (separate processes, one thread each)
    with _alongside(_command(*args, f"output_dir={reference}"), tmp_path / "reference.log"):
        killed = tmp_path / "killed"
        kill_at_checkpoint(_command(*args, f"output_dir={killed}"), killed, 2)
        stopped = final_state(killed)["step"]
        assert 0 < stopped < 6
        finish = _run(*args, f"output_dir={killed}")
        assert f"at iteration {stopped}" in finish.stdout

    a, b = final_state(reference), final_state(killed)
    assert a["step"] == b["step"] == 6 and a["best"] == b["best"]
    assert set(a["optimizers"]) == {"model", "discriminator"}
    for key, value in a["method"].items():
        assert torch.equal(b["method"][key], value), key  # networks, discriminator, queue, pointers: bitwise
    for name in ("model", "discriminator"):
        for index, state in a["optimizers"][name]["state"].items():
            for slot, tensor in state.items():
                assert torch.equal(b["optimizers"][name]["state"][index][slot], tensor), (name, index, slot)
    assert int(a["method"]["queue_count"]) == 16 and a["method"]["queue"].abs().sum() > 0
    assert any(k.startswith("model.heads.variance.") for k in a["method"])

    records = _records(reference)
    assert {"loss", "loss_discriminator", "loss_d", "loss_adv", "loss_c", "loss_var", "lr", "lr_discriminator"} \
        <= set(records[0])
    assert {r["lr_discriminator"] for r in records} == {1e-3}  # constant schedule
    assert records[-1]["lr"] < records[0]["lr"]  # poly schedule


@pytest.mark.slow
def test_toy_method_on_two_processes_logs_the_losses_of_one(tmp_path, registered, capsys, monkeypatch):
    """torchrun, 2 ranks x 2 images against 1 process x 4: same losses of both updates, same weights and queue."""
    from engine_runs import REPO, TINY_RUN, single_thread

    from semiseg.cli import main

    args = ["train.total_batch_size=4", "train.total_iters=3", "data.synthetic.image_size=64", "data.crop_size=64"]
    with _alongside(_command(*args, f"output_dir={tmp_path / 'two'}", nproc=2), tmp_path / "two.log"):
        # the one-process run in this process (the toy method registered by the fixture, one thread as the
        # subprocesses have), while the two ranks start: one process start less
        monkeypatch.chdir(REPO)
        with single_thread():
            code = main(["train", *TINY_RUN, *TOY, *args, f"output_dir={tmp_path / 'one'}"])
        assert code == 0, capsys.readouterr().err[-3000:]
    two, one = _records(tmp_path / "two"), _records(tmp_path / "one")
    assert [r["step"] for r in two] == [r["step"] for r in one] == [1, 2, 3]
    for r2, r1 in zip(two, one):
        for key in ("loss", "loss_discriminator", "loss_c", "loss_adv"):
            assert r2[key] == pytest.approx(r1[key], rel=1e-5), (r1["step"], key)
    from engine_runs import final_state

    state_two, state_one = final_state(tmp_path / "two")["method"], final_state(tmp_path / "one")["method"]
    for key, value in state_one.items():
        if value.is_floating_point():
            torch.testing.assert_close(state_two[key], value, atol=1e-4, rtol=0, msg=key)
        else:
            assert torch.equal(state_two[key], value), key


def test_toy_method_declares_its_needs_and_the_engine_reads_them(registered):
    from semiseg.config import load_config
    from semiseg.engine.build import build_method
    from semiseg.errors import SemisegError
    from semiseg.methods.interface import check_updates

    base = ["train.total_iters=1", f"method.name={NAME}", "model.encoder=resnet18", "model.pretrained=null",
            "model.aspp_channels=8", "model.decoder_channels=8", "model.low_level_channels=8"]
    with pytest.raises(SemisegError, match="model.heads.variance"):
        build_method(load_config(None, base), 5)
    cfg = load_config(None, base + ["model.heads.variance=true"])
    method = build_method(cfg, 5)
    updates = method.updates(cfg.train)
    assert [u.name for u in updates] == ["model", "discriminator"]
    assert [u.schedule for u in updates] == ["poly", "constant"]
    check_updates(method, updates)
    assert set(method.networks()) == {"model"}  # the discriminator is not a segmentation network
    box = method.views().box(12, 12)
    assert box.shape == (12, 12) and box.sum() == 12 * 4
    # a parameter left out of every update is an author's error, named
    method.extra = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="extra.weight"):
        check_updates(method, updates)


if __name__ == "__main__":  # the `semiseg` command line with the toy method registered
    from semiseg.cli import main

    METHODS.register(NAME)(ToyAdversarial)
    sys.exit(main(sys.argv[1:]))
