"""Mean Teacher (docs/methods/mean_teacher.md) against hand computations: the teacher is updated from the
post-step student and shares no storage with it."""

import math

import pytest
import torch

from semiseg.methods.interface import StepContext
from semiseg.components.losses import masked_softmax_mse, supervised_ce
from semiseg.errors import SemisegError
from test_methods import fake_batch, make, tiny_cfg


def _perturb_teacher(method):
    with torch.no_grad():
        for p in method.teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))


def test_loss_is_ce_plus_ramped_softmax_mse_on_unlabeled():
    torch.manual_seed(0)
    method = make("mean_teacher")
    _perturb_teacher(method)
    method.eval()  # BN in eval mode: separate forwards give the same logits
    batch = fake_batch(method)
    x_l, y_l = batch["labeled"]["image"], batch["labeled"]["mask"]
    x_u, v = batch["unlabeled"]["image_w"], batch["unlabeled"]["valid"]
    with torch.no_grad():
        loss, logs = method.training_step(batch, StepContext.at(0.05))
        mse = masked_softmax_mse(method.model(x_u), method.teacher(x_u), v)
        ramp = math.exp(-5 * 0.5 ** 2)  # t/T = 0.05 of t_r/T = 0.1
        expected = supervised_ce(method.model(x_l), y_l) + 100.0 * ramp * mse
    assert mse > 0
    assert logs["rampup"].item() == pytest.approx(ramp)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_consistency_on_all_adds_labeled_non_ignored_pixels():
    torch.manual_seed(0)
    method = make("mean_teacher")
    method.params.consistency_on = "all"
    method.params.rampup_fraction = 0.0  # released: constant weight
    _perturb_teacher(method)
    method.eval()
    batch = fake_batch(method)
    x = torch.cat([batch["labeled"]["image"], batch["unlabeled"]["image_w"]])
    valid = torch.cat([batch["labeled"]["mask"] != 255, batch["unlabeled"]["valid"]])
    with torch.no_grad():
        loss, _ = method.training_step(batch, StepContext.at(0.0))
        expected = supervised_ce(method.model(batch["labeled"]["image"]), batch["labeled"]["mask"]) \
            + 100.0 * masked_softmax_mse(method.model(x), method.teacher(x), valid)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_ema_runs_after_the_optimiser_step_over_parameters_only():
    torch.manual_seed(0)
    method = make("mean_teacher")
    method.train()
    opt = torch.optim.SGD(method.param_groups(0.1, 1.0), lr=0.1)
    loss, _ = method.training_step(fake_batch(method), StepContext.at(0.5))
    opt.zero_grad()
    loss.backward()
    teacher_before = {k: v.clone() for k, v in method.teacher.net.state_dict().items()}
    opt.step()
    method.after_step()
    student = dict(method.model.named_parameters())
    for name, p in method.teacher.net.named_parameters():
        expected = 0.99 * teacher_before[name] + 0.01 * student[name]  # the post-step student
        assert torch.allclose(p, expected, atol=1e-6), name
        assert p.grad is None and p.data_ptr() != student[name].data_ptr()  # no gradient, own storage
    # buffers are the teacher's own: its train-mode forward moved its running mean, the EMA did not touch it
    t_buf = dict(method.teacher.net.named_buffers())
    s_buf = dict(method.model.named_buffers())
    key = next(k for k in t_buf if k.endswith("running_mean"))
    assert not torch.equal(t_buf[key], s_buf[key])


def test_invalid_consistency_target_is_rejected():
    from semiseg.engine.build import build_method

    cfg = tiny_cfg("mean_teacher")
    cfg.method.consistency_on = "labeled"
    with pytest.raises(SemisegError, match="consistency_on"):
        build_method(cfg, 5)
