"""FixMatch with `teacher: ema` (UniMatch V2's FixMatch, docs/methods/fixmatch.md): labels from an EMA teacher."""

import pytest
import torch

from semiseg.methods.interface import StepContext
from semiseg.components.losses import masked_ce, supervised_ce
from semiseg.engine.build import build_method
from semiseg.errors import SemisegError
from test_methods import fake_batch, tiny_cfg


def _make(teacher="ema"):
    torch.manual_seed(0)
    cfg = tiny_cfg("fixmatch")
    cfg.method.teacher = teacher
    return build_method(cfg, 5)


def test_ema_teacher_labels_the_weak_view_and_predicts():
    method = _make()
    with torch.no_grad():
        for p in method.teacher.parameters():
            p.add_(0.1 * torch.randn_like(p))
    method.params.threshold = 0.0
    method.eval()
    batch = fake_batch(method)
    u = batch["unlabeled"]
    box = u["box"][:, 0]
    partner = [1, 0]
    with torch.no_grad():
        loss, _ = method.training_step(batch, StepContext.at(0.0))
        pseudo = method.teacher(u["image_w"]).argmax(1)
        assert not torch.equal(pseudo, method.model(u["image_w"]).argmax(1))
        x_s = torch.where(box[:, None], u["image_s"][partner, 0], u["image_s"][:, 0])
        valid = torch.where(box, u["valid"][partner], u["valid"])
        loss_s = masked_ce(method.model(x_s), torch.where(box, pseudo[partner], pseudo),
                           torch.ones_like(valid, dtype=torch.float), valid)
        expected = 0.5 * supervised_ce(method.model(batch["labeled"]["image"]), batch["labeled"]["mask"]) + 0.5 * loss_s
        x = torch.randn(1, 3, 32, 32)
        assert torch.equal(method.predict(x), method.teacher(x))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_ema_teacher_follows_the_student_and_stays_in_eval_mode():
    method = _make()
    method.train()
    assert not method.teacher.training and method.model.training
    opt = torch.optim.SGD(method.param_groups(0.1, 1.0), lr=0.1)
    loss, _ = method.training_step(fake_batch(method), StepContext.at(0.0))
    opt.zero_grad()
    loss.backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    opt.step()
    method.after_step()  # λ_0 = 0: the teacher becomes the student
    assert all(torch.equal(a, b) for a, b in zip(method.teacher.parameters(), method.model.parameters()))
    assert int(method.teacher.updates) == 1


def test_default_has_no_teacher_and_bad_value_is_rejected():
    assert "teacher" not in _make("none").networks()
    cfg = tiny_cfg("fixmatch")
    cfg.method.teacher = "mean"
    with pytest.raises(SemisegError, match="method.teacher"):
        build_method(cfg, 5)
