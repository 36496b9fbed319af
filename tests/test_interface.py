"""The method/engine interface values, the EMA teacher, iterations per epoch and the precision hooks.

- methods/interface.py: `StepContext` (progress, epoch, `at`), `Views` (num_boxes defaults, explicit
  boxes, validation), `Update` (schedule validation), `check_updates` (each author's mistake raises a
  ValueError naming the parameter or update; frozen parameters may sit outside every update);
- components/ema.py `EMATeacher`: λ_t with and without warm-up against hand computations, buffers
  (averaged floats, copied integers, or left alone), train/eval mode, no gradients, own storage,
  the `updates` counter, `copy_from`, `backbone_parameters`;
- engine/build.py `iters_per_epoch`: ⌊max(N_l, N_u)/B_u⌋ or ⌊N_l/B⌋, at least 1;
- engine/precision.py `networks_of` / `Precision.attach`: bf16 inside each network, fp32 outside.
"""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from semiseg.components.ema import EMATeacher
from semiseg.config import load_config
from semiseg.engine.build import iters_per_epoch
from semiseg.engine.precision import Precision, networks_of
from semiseg.methods.interface import StepContext, Update, Views, check_updates


def box_generator(h, w):
    return torch.ones(h, w)


def no_loss(batch, ctx):
    return torch.zeros(()), {}


# -- StepContext ------------------------------------------------------------------------------------

def test_step_context_progress_and_epoch():
    ctx = StepContext(step=25, total=100, iters_per_epoch=10)
    assert ctx.progress == 0.25
    assert ctx.epoch == 2
    assert StepContext(9, 100, 10).epoch == 0 and StepContext(10, 100, 10).epoch == 1
    assert StepContext(0, 7).progress == 0.0 and StepContext(0, 7).epoch == 0  # I defaults to 1
    assert StepContext(3, 7).epoch == 3
    with pytest.raises(Exception):
        ctx.step = 3  # frozen


def test_step_context_at():
    ctx = StepContext.at(0.5, total=10)
    assert ctx.step == 5 and ctx.total == 10 and ctx.progress == 0.5
    assert StepContext.at(0.25, total=100, iters_per_epoch=10).epoch == 2
    assert StepContext.at(0.0).step == 0


# -- Views ------------------------------------------------------------------------------------------

def test_views_num_boxes_defaults():
    assert Views().num_boxes == 0
    assert Views(unlabeled=True).num_boxes == 0
    assert Views(unlabeled=True, strong=2).num_boxes == 0  # no box generator: no boxes
    assert Views(unlabeled=True, strong=2, box=box_generator).num_boxes == 2  # one per strong view
    assert Views(unlabeled=True, strong=1, box=box_generator).num_boxes == 1
    assert Views(unlabeled=True, strong=0, box=box_generator).num_boxes == 1  # one without strong views


def test_views_explicit_boxes():
    assert Views(unlabeled=True, strong=2, box=box_generator, boxes=1).num_boxes == 1
    assert Views(unlabeled=True, strong=1, box=box_generator, boxes=3).num_boxes == 3
    assert Views(unlabeled=True, strong=2, box=box_generator, boxes=0).num_boxes == 0
    assert Views(unlabeled=True, strong=2, boxes=3).num_boxes == 0  # boxes without a generator: none


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(strong=1), "unlabeled=True"),
    (dict(box=box_generator), "unlabeled=True"),
    (dict(unlabeled=True, strong=-1), ">= 0"),
    (dict(unlabeled=True, box=box_generator, boxes=-1), ">= 0"),
])
def test_views_validation(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        Views(**kwargs)


# -- Update / check_updates -------------------------------------------------------------------------

def test_update_schedule_is_checked():
    net = nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="'cosine'"):
        Update("model", opt, [net], no_loss, "cosine")
    update = Update("model", opt, (net,), no_loss, "constant")
    assert update.modules == [net]  # any sequence becomes a list
    assert Update("model", opt, [net], no_loss).schedule == "poly"


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 2)
        self.b = nn.Linear(2, 2)


def update(name, params, modules):
    return Update(name, torch.optim.SGD(list(params), lr=0.1), modules, no_loss)


def test_check_updates_accepts_a_partition():
    m = TwoLayers()
    check_updates(m, [update("first", m.a.parameters(), [m.a]), update("second", m.b.parameters(), [m.b])])
    check_updates(m, [update("model", m.parameters(), [m])])


def test_check_updates_parameter_in_two_updates():
    m = TwoLayers()
    updates = [update("first", m.a.parameters(), [m.a]),
               update("second", [m.a.weight, *m.b.parameters()], [m.a, m.b])]
    with pytest.raises(ValueError, match="a.weight is stepped by updates 'first' and 'second'"):
        check_updates(m, updates)


def test_check_updates_parameter_outside_the_modules():
    m = TwoLayers()
    with pytest.raises(ValueError, match="update 'model' steps b.weight, which is not in its modules"):
        check_updates(m, [update("model", m.parameters(), [m.a])])


def test_check_updates_trainable_parameter_in_no_update():
    m = TwoLayers()
    with pytest.raises(ValueError, match="trainable parameter b.weight is in no update"):
        check_updates(m, [update("model", m.a.parameters(), [m.a])])


def test_check_updates_duplicate_names():
    m = TwoLayers()
    updates = [update("model", m.a.parameters(), [m.a]), update("model", m.b.parameters(), [m.b])]
    with pytest.raises(ValueError, match="unique.*'model', 'model'"):
        check_updates(m, updates)
    with pytest.raises(ValueError, match="no update"):
        check_updates(m, [])


def test_check_updates_frozen_parameter_outside_every_update_is_fine():
    m = TwoLayers()
    m.b.requires_grad_(False)
    check_updates(m, [update("model", m.a.parameters(), [m.a])])
    m.b.bias.requires_grad_(True)
    with pytest.raises(ValueError, match="b.bias"):
        check_updates(m, [update("model", m.a.parameters(), [m.a])])


# -- EMATeacher -------------------------------------------------------------------------------------

class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 1)
        self.bn = nn.BatchNorm2d(3)
        self.head = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        return self.head(self.bn(self.conv(x)))

    def backbone_parameters(self):
        return self.conv.parameters()


def student_net(seed=0):
    torch.manual_seed(seed)
    return TinyNet()


def state_of(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@torch.no_grad()
def set_student(student, value, count=0):
    """Every parameter and float buffer filled with `value` (+ a per-element ramp); BN's counter = `count`."""
    for name, t in [*student.named_parameters(), *student.named_buffers()]:
        if t.dtype.is_floating_point:
            t.copy_(value + torch.arange(t.numel(), dtype=t.dtype).reshape(t.shape) / 10)
        else:
            t.fill_(count)
    return state_of(student)


def params_of(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def assert_params(teacher, expected):
    got = params_of(teacher.net)
    assert set(got) == set(expected)
    for k, v in expected.items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=1e-6, msg=k)


def test_warmup_first_update_copies_then_averages_then_caps_at_alpha():
    student = student_net()
    teacher = EMATeacher(student, decay=0.6, warmup=True)
    assert teacher.current_decay() == 0.0
    s1 = set_student(student, 1.0)
    teacher.update(student)  # λ_0 = 0: the teacher becomes the student
    assert_params(teacher, {k: s1[k] for k in params_of(student)})
    assert teacher.current_decay() == 0.5
    s2 = set_student(student, 3.0)
    teacher.update(student)  # λ_1 = 1/2: the mean of the two students
    t2 = {k: (s1[k] + s2[k]) / 2 for k in params_of(student)}
    assert_params(teacher, t2)
    assert teacher.current_decay() == pytest.approx(0.6)  # min(2/3, 0.6)
    s3 = set_student(student, -2.0)
    teacher.update(student)
    t3 = {k: 0.6 * t2[k] + 0.4 * s3[k] for k in t2}
    assert_params(teacher, t3)
    assert int(teacher.updates) == 3


def test_warmup_decay_grows_as_one_minus_one_over_t_plus_one():
    teacher = EMATeacher(student_net(), decay=0.99, warmup=True)
    student = student_net(1)
    decays = []
    for _ in range(5):
        decays.append(teacher.current_decay())
        teacher.update(student)
    assert decays == pytest.approx([0.0, 1 / 2, 2 / 3, 3 / 4, 4 / 5])


def test_without_warmup_decay_is_alpha_from_the_start():
    student = student_net()
    t0 = params_of(student)
    teacher = EMATeacher(student, decay=0.9, warmup=False)
    assert teacher.current_decay() == 0.9
    s1 = set_student(student, 2.0)
    teacher.update(student)
    assert_params(teacher, {k: 0.9 * t0[k] + 0.1 * s1[k] for k in t0})
    assert teacher.current_decay() == 0.9


def test_include_buffers_averages_float_buffers_and_copies_integer_ones():
    student = student_net()
    b0 = {k: v.clone() for k, v in student.named_buffers()}
    teacher = EMATeacher(student, decay=0.75, warmup=False, include_buffers=True)
    s1 = set_student(student, 5.0, count=7)
    teacher.update(student)
    buffers = dict(teacher.net.named_buffers())
    for name in ("bn.running_mean", "bn.running_var"):
        torch.testing.assert_close(buffers[name], 0.75 * b0[name] + 0.25 * s1[name], rtol=0, atol=1e-6)
    count = buffers["bn.num_batches_tracked"]
    assert count.dtype == torch.long and int(count) == 7  # copied, not averaged (0.75·0 + 0.25·7)


def test_without_include_buffers_the_teachers_buffers_stay():
    student = student_net()
    teacher = EMATeacher(student, decay=0.75, warmup=False, include_buffers=False)
    before = {k: v.clone() for k, v in teacher.net.named_buffers()}
    set_student(student, 5.0, count=7)
    teacher.update(student)
    for name, value in teacher.net.named_buffers():
        assert torch.equal(value, before[name]), name
    assert not torch.equal(params_of(teacher.net)["conv.weight"], params_of(student_net())["conv.weight"])


class Parent(nn.Module):
    def __init__(self, batch_statistics):
        super().__init__()
        self.model = student_net()
        self.teacher = EMATeacher(self.model, 0.9, batch_statistics=batch_statistics)


def test_batch_statistics_false_keeps_the_teacher_in_eval_mode():
    parent = Parent(batch_statistics=False)
    assert not parent.teacher.training
    parent.train()
    assert parent.model.training
    assert not any(m.training for m in parent.teacher.modules())
    parent.teacher.train()
    assert not any(m.training for m in parent.teacher.modules())


def test_batch_statistics_true_follows_the_parent():
    parent = Parent(batch_statistics=True)
    assert not parent.teacher.training  # starts in eval mode
    parent.train()
    assert all(m.training for m in parent.teacher.modules())
    parent.eval()
    assert not any(m.training for m in parent.teacher.modules())


def test_teacher_needs_no_grad_and_has_its_own_storage():
    student = student_net()
    teacher = EMATeacher(student, 0.9)
    assert all(p.requires_grad for p in student.parameters())  # the student is left trainable
    assert not any(p.requires_grad for p in teacher.parameters())
    student_ptrs = {t.data_ptr() for t in [*student.parameters(), *student.buffers()]}
    assert not student_ptrs & {t.data_ptr() for t in [*teacher.net.parameters(), *teacher.net.buffers()]}
    before = params_of(teacher.net)
    set_student(student, 9.0)
    for k, v in params_of(teacher.net).items():
        assert torch.equal(v, before[k]), k
    # forward is the network's, and nothing in it asks for a gradient
    x = torch.randn(2, 2, 4, 4)
    out = teacher(x)
    torch.testing.assert_close(out, teacher.net(x))
    assert not out.requires_grad


def test_updates_counter_is_saved_and_restored():
    student = student_net()
    teacher = EMATeacher(student, 0.9)
    assert teacher.updates.dtype == torch.long and int(teacher.updates) == 0
    teacher.update(student)
    teacher.update(student)
    state = teacher.state_dict()
    assert int(state["updates"]) == 2
    assert "net.conv.weight" in state
    restored = EMATeacher(student_net(1), 0.9)
    restored.load_state_dict(state)
    assert int(restored.updates) == 2 and restored.current_decay() == pytest.approx(2 / 3)
    assert "teacher.updates" in Parent(batch_statistics=False).state_dict()


def test_copy_from_copies_parameters_and_buffers():
    student = student_net()
    teacher = EMATeacher(student, 0.9)
    s = set_student(student, 4.0, count=11)
    teacher.copy_from(student)
    for k, v in teacher.net.state_dict().items():
        assert torch.equal(v, s[k]), k
    assert teacher.net.bn.num_batches_tracked.dtype == torch.long
    assert not any(p.requires_grad for p in teacher.parameters())


def test_backbone_parameters_are_the_teachers_own():
    student = student_net()
    teacher = EMATeacher(student, 0.9)
    ids = [id(p) for p in teacher.backbone_parameters()]
    assert ids == [id(p) for p in teacher.net.conv.parameters()]
    assert not set(ids) & {id(p) for p in student.parameters()}


def test_decay_out_of_range_raises():
    with pytest.raises(ValueError, match="decay"):
        EMATeacher(student_net(), 1.5)


# -- iters_per_epoch --------------------------------------------------------------------------------

def splits(n_labeled, n_unlabeled):
    return SimpleNamespace(labeled=list(range(n_labeled)),
                           unlabeled=None if n_unlabeled is None else list(range(n_unlabeled)))


def train_cfg(batch, unlabeled_batch=None):
    overrides = ["train.total_iters=1", f"train.total_batch_size={batch}"]
    if unlabeled_batch is not None:
        overrides.append(f"train.unlabeled_batch_size={unlabeled_batch}")
    return load_config(None, overrides)


SEMI = Views(unlabeled=True)
LABELED_ONLY = Views()


@pytest.mark.parametrize("n_l, n_u, batch, unlabeled_batch, views, expected", [
    (10, 100, 4, 8, SEMI, 12),  # ⌊100/8⌋ with the unlabeled batch
    (10, 100, 4, None, SEMI, 25),  # the unlabeled batch defaults to the labeled one
    (50, 20, 4, 8, SEMI, 6),  # max(N_l, N_u) = N_l
    (10, 100, 4, 8, LABELED_ONLY, 2),  # ⌊10/4⌋: unlabeled images unused
    (10, None, 4, 8, SEMI, 2),  # no unlabeled split
    (2, 3, 4, 8, SEMI, 1),  # never below 1
    (2, None, 4, None, LABELED_ONLY, 1),
])
def test_iters_per_epoch(n_l, n_u, batch, unlabeled_batch, views, expected):
    assert iters_per_epoch(train_cfg(batch, unlabeled_batch), splits(n_l, n_u), views) == expected


# -- precision hooks --------------------------------------------------------------------------------

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.inner = []

    def forward(self, x):
        y = self.conv(x)
        self.inner.append(y.dtype)
        return {"logits": y, "index": torch.arange(2)}


class FakeMethod(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.model = Net()
        self.branches = nn.ModuleList([nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)])

    def forward(self, x):
        a = self.model(x)["logits"]
        b, c = (branch(x) for branch in self.branches)
        outs = [a, b, c]
        sims = [o.flatten(1) @ o.flatten(1).T for o in outs]  # the method's own computation
        return outs, sims


def test_networks_of_lists_children_and_module_list_members():
    method = FakeMethod()
    assert list(networks_of(method)) == [method.model, method.branches[0], method.branches[1]]


def test_attach_bf16_runs_networks_in_bf16_and_returns_fp32():
    method = FakeMethod()
    inner_branch = []
    for branch in method.branches:  # registered before attach: sees the output inside the network
        branch.register_forward_hook(lambda m, a, out: inner_branch.append(out.dtype))
    x = torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        reference, _ = method(x)
    Precision("bf16", torch.device("cpu")).attach(method)
    method.model.inner.clear()
    inner_branch.clear()
    outs, sims = method(x)
    assert method.model.inner == [torch.bfloat16]
    assert inner_branch == [torch.bfloat16, torch.bfloat16]
    assert [o.dtype for o in outs] == [torch.float32] * 3
    assert [s.dtype for s in sims] == [torch.float32] * 3  # the matmul outside the networks is fp32
    assert not torch.is_autocast_enabled("cpu")
    assert method.model(x)["index"].dtype == torch.long  # non-float outputs untouched
    for got, ref in zip(outs, reference):
        torch.testing.assert_close(got, ref, rtol=2e-2, atol=2e-2)  # bf16 rounding only
    # the hooks do nothing for amp=off
    plain = FakeMethod()
    Precision("off", torch.device("cpu")).attach(plain)
    plain(x)
    assert plain.model.inner == [torch.float32]


def test_check_updates_refuses_modules_outside_the_method():
    from torch import nn

    from semiseg.methods.interface import Update, check_updates

    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(2, 2)

    holder, outside = Holder(), nn.Linear(2, 2)
    own = Update("model", torch.optim.SGD(holder.net.parameters(), lr=0.1), [holder.net], lambda b, c: None)
    stray = Update("extra", torch.optim.SGD(outside.parameters(), lr=0.1), [outside], lambda b, c: None)
    with pytest.raises(ValueError, match="not an attribute of the method"):
        check_updates(holder, [own, stray])
