"""components/optimizers.py through the default update: SGD and AdamW over the method's parameter groups,
optional no-decay on norms/biases; engine/schedule.py: poly and constant schedules."""

import pytest
import torch
from omegaconf import OmegaConf

from semiseg.config import TrainConfig
from semiseg.engine.schedule import remember_base_lr, set_lr
from semiseg.errors import SemisegError
from semiseg.methods.base import Method, MethodParams


def build_optimizer(method, train_cfg):
    """The optimiser of the method's default update, with the engine's record of each group's initial lr."""
    optimizer = method.updates(train_cfg)[0].optimizer
    remember_base_lr(optimizer)
    return optimizer


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
        self.decoder = torch.nn.Conv2d(4, 2, 1)

    def backbone_parameters(self):
        return self.encoder.parameters()


def _train(**kw):
    return OmegaConf.merge(OmegaConf.structured(TrainConfig), kw)


def test_sgd_and_adamw_groups():
    method = Method(_Net(), MethodParams())
    sgd = build_optimizer(method, _train(optimizer="sgd", lr=0.01, lr_multi=10.0, weight_decay=1e-4))
    assert isinstance(sgd, torch.optim.SGD)
    assert [g["lr"] for g in sgd.param_groups] == pytest.approx([0.01, 0.1])
    adamw = build_optimizer(method, _train(optimizer="adamw", lr=5e-6, lr_multi=40.0, weight_decay=0.01))
    assert isinstance(adamw, torch.optim.AdamW)
    assert adamw.param_groups[0]["betas"] == (0.9, 0.999)
    assert [g["base_lr"] for g in adamw.param_groups] == pytest.approx([5e-6, 2e-4])
    assert all(g["weight_decay"] == 0.01 for g in adamw.param_groups)
    with pytest.raises(SemisegError, match="adamw"):
        build_optimizer(method, _train(optimizer="adam"))


def test_no_decay_on_norm_and_bias():
    method = Method(_Net(), MethodParams())
    opt = build_optimizer(method, _train(weight_decay=4e-4, wd_norm_bias=False))
    by_name = {g["name"]: g for g in opt.param_groups}
    assert by_name["backbone"]["weight_decay"] == 4e-4 and by_name["backbone_no_decay"]["weight_decay"] == 0.0
    assert all(p.dim() > 1 for p in by_name["backbone"]["params"] + by_name["head"]["params"])
    assert all(p.dim() == 1 for p in by_name["backbone_no_decay"]["params"] + by_name["head_no_decay"]["params"])
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(method.parameters()))
    assert by_name["head_no_decay"]["base_lr"] == by_name["head"]["base_lr"]


def test_poly_and_constant_schedules_start_from_each_groups_initial_lr():
    from semiseg.engine.schedule import set_lr

    method = Method(_Net(), MethodParams())
    opt = build_optimizer(method, _train(lr=0.01, lr_multi=10.0))
    assert set_lr(opt, 0, 10, 0.9) == pytest.approx(0.01)
    set_lr(opt, 5, 10, 0.9)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01 * 0.5 ** 0.9, 0.1 * 0.5 ** 0.9])
    set_lr(opt, 5, 10, 0.9, "constant")
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 0.1])
    adam = torch.optim.Adam(_Net().parameters(), lr=1e-4)  # a method's own optimiser: no base_lr given
    assert set_lr(adam, 7, 10, 0.9, "constant") == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="schedule"):
        set_lr(opt, 0, 10, 0.9, "cosine")


def test_warmup_ramps_linearly_into_the_poly_rate_without_a_jump():
    from semiseg.engine.schedule import poly_lr, warmup_poly_lr

    base, total, warm = 0.01, 100, 10
    rates = [warmup_poly_lr(base, t, total, 0.9, warm) for t in range(total)]
    target = poly_lr(base, warm, total, 0.9)
    assert rates[0] == pytest.approx(target / warm) and rates[warm - 1] == pytest.approx(target)
    assert rates[warm] == pytest.approx(target)  # continuous where the release jumps from lr_0 to poly(W)
    assert all(b > a for a, b in zip(rates[:warm - 1], rates[1:warm]))  # rising during the warm-up
    assert rates[warm:] == [poly_lr(base, t, total, 0.9) for t in range(warm, total)]
    assert [warmup_poly_lr(base, t, total, 0.9, 0) for t in range(total)] == \
        [poly_lr(base, t, total, 0.9) for t in range(total)]  # no warm-up: plain poly


def test_warmup_leaves_constant_updates_alone_and_must_end_before_the_run():
    import torch

    from semiseg.config import load_config
    from semiseg.errors import SemisegError

    adam = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    assert set_lr(adam, 0, 10, 0.9, "constant", warmup=5) == pytest.approx(1e-4)
    with pytest.raises(SemisegError, match="train.warmup_iters"):
        load_config(None, ["train.total_iters=10", "train.warmup_iters=10", "method.name=supervised"])
