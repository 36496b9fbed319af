"""EMA teachers against hand computations (docs/method_interface.md, EMA teacher): the teacher shares no
storage with the student, and integer buffers are copied, never averaged."""

import pytest
import torch
from torch import nn

from semiseg.components.ema import ema_update, make_teacher, warmup_decay


def tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))


def test_warmup_decay_values():
    assert warmup_decay(0, 0.996) == 0.0  # first update: the teacher becomes the student
    assert warmup_decay(1, 0.996) == pytest.approx(0.5)
    assert warmup_decay(99, 0.99) == pytest.approx(0.99)  # U2PL: reaches 0.99 at k = 99
    assert warmup_decay(248, 0.996) == pytest.approx(1 - 1 / 249)
    assert warmup_decay(249, 0.996) == pytest.approx(0.996)  # V2: 0.996 from t = 249 on
    assert warmup_decay(10_000, 0.996) == 0.996
    with pytest.raises(ValueError):
        warmup_decay(-1, 0.99)


def test_teacher_is_a_copy_with_its_own_storage_and_no_grad():
    student = tiny_net()
    teacher = make_teacher(student)
    for (name, p_s), p_t in zip(student.named_parameters(), teacher.parameters()):
        assert torch.equal(p_s, p_t), name
        assert p_s.data_ptr() != p_t.data_ptr()  # never aliased
        assert not p_t.requires_grad and p_s.requires_grad
    with torch.no_grad():
        student[0].weight.add_(1.0)
    assert not torch.equal(student[0].weight, teacher[0].weight)


def test_parameters_only_update_is_the_weighted_mean_and_leaves_buffers():
    student, teacher = tiny_net(), tiny_net()
    with torch.no_grad():
        for p in teacher.parameters():
            p.fill_(1.0)
        for p in student.parameters():
            p.fill_(3.0)
        student[1].running_mean.fill_(5.0)
        student[1].num_batches_tracked.fill_(7)
    ema_update(teacher, student, 0.75)
    for p in teacher.parameters():
        assert torch.allclose(p, torch.full_like(p, 0.75 * 1 + 0.25 * 3))
    assert torch.equal(teacher[1].running_mean, torch.zeros(2))  # untouched
    assert int(teacher[1].num_batches_tracked) == 0


def test_parameters_and_buffers_update_copies_integer_buffers():
    student, teacher = tiny_net(), tiny_net()
    with torch.no_grad():
        student[1].running_mean.fill_(4.0)
        student[1].running_var.fill_(2.0)
        student[1].num_batches_tracked.fill_(7)
    ema_update(teacher, student, 0.5, include_buffers=True)
    assert torch.allclose(teacher[1].running_mean, torch.full((2,), 2.0))  # 0.5·0 + 0.5·4
    assert torch.allclose(teacher[1].running_var, torch.full((2,), 1.5))  # 0.5·1 + 0.5·2
    # the integer counter is copied and keeps its dtype
    assert teacher[1].num_batches_tracked.dtype == torch.long
    assert int(teacher[1].num_batches_tracked) == 7


def test_decay_zero_copies_and_one_freezes():
    student, teacher = tiny_net(), make_teacher(tiny_net())
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    frozen = [p.clone() for p in teacher.parameters()]
    ema_update(teacher, student, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(frozen, teacher.parameters()))
    ema_update(teacher, student, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(student.parameters(), teacher.parameters()))


def test_mismatched_networks_are_rejected():
    with pytest.raises(ValueError):
        ema_update(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2)), 0.5)
    with pytest.raises(ValueError):
        ema_update(nn.Linear(2, 2), nn.Linear(2, 2), 1.5)


def test_a_0_1_0_teacher_checkpoint_loads_into_the_current_layout():
    """0.1.0 saved a teacher as `teacher.*` plus `ema_updates`; it now lives at `teacher.net.*`, `teacher.updates`."""
    from semiseg.engine.checkpoint import load_method_state
    from test_methods import make

    for name in ("mean_teacher", "unimatch_v2"):
        method = make(name)
        state = method.state_dict()
        legacy = {k: v for k, v in state.items() if not k.startswith("teacher.")}
        legacy.update({"teacher." + k[len("teacher.net."):]: v + 1 for k, v in state.items()
                       if k.startswith("teacher.net.") and v.is_floating_point()})
        legacy.update({"teacher." + k[len("teacher.net."):]: v for k, v in state.items()
                       if k.startswith("teacher.net.") and not v.is_floating_point()})
        legacy["ema_updates"] = torch.tensor(7)
        fresh = make(name, seed=1)
        load_method_state(fresh, legacy, "old.pt")
        for key, value in fresh.teacher.net.state_dict().items():
            if value.is_floating_point():
                assert torch.equal(value, state["teacher.net." + key] + 1), key
        assert int(fresh.teacher.updates) == 7
        load_method_state(fresh, state, "new.pt")  # the current layout passes through unchanged
        assert int(fresh.teacher.updates) == 0
