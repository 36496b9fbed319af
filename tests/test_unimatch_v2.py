"""UniMatch V2 (docs/methods/unimatch_v2.md): the teacher is an EMA of the student (not the student), it
labels the weak view, the strong pair gets complementary channel dropout; on a tiny DPT too. The teacher
shares no storage with the student, integer buffers keep their dtype, unlabeled masks are never read."""

import pytest
import torch

from semiseg.methods.interface import StepContext
from semiseg.components.losses import masked_ce, supervised_ce
from semiseg.components.perturbation import complementary_channel_dropout
from semiseg.config import load_config
from semiseg.engine.schedule import remember_base_lr
from semiseg.methods.unimatch_v2 import UniMatchV2, UniMatchV2Params
from semiseg.models.dpt import DPTSegmenter
from test_methods import fake_batch, make


def build_optimizer(method, train_cfg):
    """The optimiser of the method's default update, with the engine's record of each group's initial lr."""
    optimizer = method.updates(train_cfg)[0].optimizer
    remember_base_lr(optimizer)
    return optimizer


def _sgd_step(method, batch, lr=0.1):
    opt = torch.optim.SGD(method.param_groups(lr, 1.0), lr=lr)
    loss, _ = method.training_step(batch, StepContext.at(0.0))
    opt.zero_grad()
    loss.backward()
    opt.step()
    method.after_step()


def test_teacher_is_an_ema_of_the_student_with_warmup():
    torch.manual_seed(0)
    method = make("unimatch_v2")
    method.train()
    assert not method.teacher.training  # always eval mode, even under method.train()
    _sgd_step(method, fake_batch(method, 0))
    # λ_0 = 0: after the first step the teacher is a copy of the trained student, buffers included
    student = method.model.state_dict()
    for k, t in method.teacher.net.state_dict().items():
        assert torch.equal(t, student[k]), k
        assert t.dtype == student[k].dtype  # num_batches_tracked stays an integer
    before = {k: v.clone() for k, v in method.teacher.net.state_dict().items()}
    _sgd_step(method, fake_batch(method, 1))
    student = method.model.state_dict()
    changed = 0
    for k, t in method.teacher.net.state_dict().items():
        if t.dtype.is_floating_point:  # λ_1 = 1/2
            assert torch.allclose(t, 0.5 * before[k] + 0.5 * student[k], atol=1e-6), k
            changed += not torch.equal(t, student[k])
        else:
            assert torch.equal(t, student[k]), k  # integer buffers copied
    assert changed > 0  # the teacher is not the student
    assert int(method.teacher.updates) == 2
    for p_t, p_s in zip(method.teacher.parameters(), method.model.parameters()):
        assert p_t.grad is None and not p_t.requires_grad and p_t.data_ptr() != p_s.data_ptr()  # own storage


def test_pseudo_labels_come_from_the_teacher_and_views_get_complementary_dropout():
    torch.manual_seed(0)
    method = make("unimatch_v2")
    with torch.no_grad():
        for p in method.teacher.parameters():
            p.add_(0.1 * torch.randn_like(p))
    tau = 0.25
    method.params.threshold = tau
    method.eval()
    batch = fake_batch(method)
    x_l, y_l = batch["labeled"]["image"], batch["labeled"]["mask"]
    u = batch["unlabeled"]
    x_w, v, x_s, boxes = u["image_w"], u["valid"], u["image_s"], u["box"]
    b = len(x_w)
    partner = [(i + 1) % b for i in range(b)]
    with torch.no_grad():
        torch.manual_seed(5)
        loss, _ = method.training_step(batch, StepContext.at(0.0))
        conf, pseudo = method.teacher(x_w).softmax(1).max(1)
        student_pseudo = method.model(x_w).argmax(1)
        assert not torch.equal(pseudo, student_pseudo)  # the test can tell teacher from student
        strong = torch.cat([torch.where(boxes[:, k, None], x_s[partner, k], x_s[:, k]) for k in range(2)])
        feats = method.model.encoder(strong)
        feats = [feats[method.model.encoder.low_index], feats[-1]]
        torch.manual_seed(5)
        feats = complementary_channel_dropout(feats)
        z_s = torch.nn.functional.interpolate(method.model.decoder(*feats), size=strong.shape[-2:],
                                              mode="bilinear", align_corners=True).chunk(2)
        loss_s = []
        for k in range(2):
            m = boxes[:, k]
            target = torch.where(m, pseudo[partner], pseudo)
            sel = (torch.where(m, conf[partner], conf) >= tau).float()
            loss_s.append(masked_ce(z_s[k], target, sel, torch.where(m, v[partner], v)))
        expected = (supervised_ce(method.model(x_l), y_l) + (loss_s[0] + loss_s[1]) / 2) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # the teacher predicts
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(method.predict(x), method.teacher(x))


class _ViewsOnly(dict):
    """An unlabeled batch that fails if anything but the views is read (unlabeled masks are never read)."""

    def __getitem__(self, key):
        assert key in ("image_w", "image_s", "box", "valid", "index"), f"unlabeled batch read '{key}'"
        return super().__getitem__(key)


@pytest.mark.parametrize("name", ["mean_teacher", "cps", "unimatch", "unimatch_v2", "fixmatch"])
def test_unlabeled_images_need_no_masks(name):
    method = make(name)
    batch = fake_batch(method)
    batch["unlabeled"] = _ViewsOnly(batch["unlabeled"])
    loss, _ = method.training_step(batch, StepContext.at(0.0))
    assert torch.isfinite(loss)


def test_one_adamw_step_on_a_tiny_dinov2_dpt():
    torch.manual_seed(0)
    model = DPTSegmenter("vit_small_patch14_dinov2", 5, embed_dim=24, depth=4, num_heads=2)
    method = UniMatchV2(model, UniMatchV2Params(threshold=0.0))
    cfg = load_config(None, ["train.total_iters=1", "train.optimizer=adamw", "train.lr=5e-6", "train.lr_multi=40",
                             "train.weight_decay=0.01"])
    opt = build_optimizer(method, cfg.train)
    g = torch.Generator().manual_seed(0)
    s, b = 28, 2
    batch = {"labeled": {"image": torch.randn(b, 3, s, s, generator=g),
                         "mask": torch.randint(0, 5, (b, s, s), generator=g)},
             "unlabeled": {"image_w": torch.randn(b, 3, s, s, generator=g),
                           "valid": torch.ones(b, s, s, dtype=torch.bool),
                           "image_s": torch.randn(b, 2, 3, s, s, generator=g),
                           "box": torch.zeros(b, 2, s, s, dtype=torch.bool)}}
    batch["unlabeled"]["box"][:, :, :7, :14] = True
    method.train()
    loss, _ = method.training_step(batch, StepContext.at(0.0))
    opt.zero_grad()
    loss.backward()
    assert all(p.grad is not None for p in method.model.parameters())
    assert all(p.grad is None for p in method.teacher.parameters())
    opt.step()
    method.after_step()
    assert torch.isfinite(loss)
    assert all(torch.equal(a, b) for a, b in zip(method.teacher.parameters(), method.model.parameters()))  # λ_0 = 0


def test_unknown_partner_rule_is_rejected_when_the_method_is_built():
    from semiseg.engine.build import build_method
    from semiseg.errors import SemisegError
    from test_methods import tiny_cfg

    cfg = tiny_cfg("unimatch_v2")
    cfg.method.partner = "stream"
    with pytest.raises(SemisegError, match="method.partner"):
        build_method(cfg, 5)
