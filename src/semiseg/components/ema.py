"""EMA teachers (docs/method_interface.md: EMA teacher): θ' ← λ_t·θ' + (1 − λ_t)·θ, applied after the optimiser step t.

Two variants are in use:
- parameters only (Mean Teacher, U2PL): the teacher's BatchNorm running statistics come from
  the teacher's own train-mode forwards, so its buffers are left alone;
- parameters and buffers (UniMatch V2): floating buffers are averaged like the parameters and
  integer buffers (BN's `num_batches_tracked`) are copied from the student, never averaged
  (the release averages them in float: docs/methods/unimatch_v2.md), so every buffer keeps its dtype.

The teacher is a deep copy of the student (its own storage, never shared with the student's, or the
teacher would simply be the student) that never requires gradients.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_teacher(student: nn.Module) -> nn.Module:
    """A copy of `student` with separate storage whose parameters receive no gradients."""
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    return teacher


def warmup_decay(step: int, alpha: float) -> float:
    """λ_t = min(1 − 1/(t + 1), α): 0 at t = 0 (the teacher becomes the student), α from t = 1/(1−α) − 1."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return min(1.0 - 1.0 / (step + 1), alpha)


def _check_same_layout(names_t, names_s, what: str) -> None:
    if names_t != names_s:
        raise ValueError(f"teacher and student {what} differ: the teacher must be a copy of the student")


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float, include_buffers: bool = False) -> None:
    """θ' ← decay·θ' + (1 − decay)·θ over the parameters (and the buffers when `include_buffers`)."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
    params_t, params_s = dict(teacher.named_parameters()), dict(student.named_parameters())
    _check_same_layout(list(params_t), list(params_s), "parameters")
    for name, p_t in params_t.items():
        p_t.mul_(decay).add_(params_s[name].detach().to(p_t.dtype), alpha=1.0 - decay)
    if not include_buffers:
        return
    buffers_t, buffers_s = dict(teacher.named_buffers()), dict(student.named_buffers())
    _check_same_layout(list(buffers_t), list(buffers_s), "buffers")
    for name, b_t in buffers_t.items():
        b_s = buffers_s[name]
        if b_t.dtype.is_floating_point:
            b_t.mul_(decay).add_(b_s.to(b_t.dtype), alpha=1.0 - decay)
        else:
            b_t.copy_(b_s)


class EMATeacher(nn.Module):
    """An EMA copy of a student network: the one teacher component of every teacher-student method.

    decay: α. With `warmup`, λ_t = min(1 − 1/(t+1), α) where t counts this teacher's updates (λ_0 = 0:
      the first update copies the student); without it, λ_t = α from the start (Mean Teacher).
    include_buffers: also average floating buffers (BN statistics) and copy integer ones (UniMatch V2);
      otherwise the buffers are the teacher's own (its train-mode forwards move them).
    batch_statistics: whether `train()` may put the teacher in train mode (BN on batch statistics, as
      Mean Teacher's release); False keeps it in eval mode whatever the method's mode.
    The teacher holds its own fp32 storage, receives no gradients and is saved with the method
    (`<name>.net.*` and the update counter `<name>.updates`). `forward` is the network's.
    """

    def __init__(self, student: nn.Module, decay: float, warmup: bool = True, include_buffers: bool = False,
                 batch_statistics: bool = False):
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.net = make_teacher(student)
        self.decay, self.warmup = float(decay), bool(warmup)
        self.include_buffers, self.batch_statistics = bool(include_buffers), bool(batch_statistics)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self.train(False)

    def forward(self, *args, **kwargs):
        return self.net(*args, **kwargs)

    def train(self, mode: bool = True):
        return super().train(mode and self.batch_statistics)

    def backbone_parameters(self):
        return self.net.backbone_parameters()

    def current_decay(self) -> float:
        """λ of the next update."""
        return warmup_decay(int(self.updates), self.decay) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        """θ' ← λ_t·θ' + (1 − λ_t)·θ, after the optimiser step t."""
        ema_update(self.net, student, self.current_decay(), self.include_buffers)
        self.updates += 1

    @staticmethod
    def upgrade_state(state: dict, prefix: str) -> dict:
        """A method state written by semiseg 0.1.0, where this teacher's network sat at `<prefix>*` and its
        counter at `ema_updates`, in this layout (`<prefix>net.*`, `<prefix>updates`); other states unchanged."""
        own = [k for k in state if k.startswith(prefix)]
        if not own or any(k.startswith(prefix + "net.") for k in own):
            return state
        upgraded = {k: v for k, v in state.items() if not k.startswith(prefix) and k != "ema_updates"}
        upgraded.update({prefix + "net." + k[len(prefix):]: state[k] for k in own})
        upgraded[prefix + "updates"] = state.get("ema_updates", torch.zeros((), dtype=torch.long))
        return upgraded

    @torch.no_grad()
    def copy_from(self, student: nn.Module) -> None:
        """θ' ← θ, parameters and buffers (e.g. at the first semi-supervised step after a warm-up)."""
        self.net.load_state_dict(student.state_dict())
