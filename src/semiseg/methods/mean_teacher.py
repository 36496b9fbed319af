"""Mean Teacher (Tarvainen & Valpola, NeurIPS 2017) as the segmentation baseline of CPS (methods.md §2).

    θ'  ← copy of θ at t = 0;  after every optimiser step  θ' ← 0.99·θ' + 0.01·θ   (parameters only)
    L   = CE(f_θ(x_l), y_l) + λ_mt·r(t)·L_mse
    L_mse = mean over the valid B_u·C·H·W elements of (softmax f_θ(x_u) − sg(softmax f_θ'(x_u)))²
    r(t)  = exp(−5·(1 − min(t, t_r)/t_r)²),  t_r = 0.1·T

Released code (`charlesCXK/TorchSemiSeg`, MeanTeacher): both networks see the same weak images in
train mode (the teacher's BN uses batch statistics and keeps its own running statistics), λ_mt = 100.
Our differences, all switchable: the EMA runs after the optimiser step (released: inside the forward,
one step behind, P32), the consistency covers the unlabeled images only (`consistency_on: all` =
released, labeled padding excluded), and the weight ramps up over 10 % of T (`rampup_fraction: 0` =
released). The student is evaluated (as released).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..components.ema import ema_update, make_teacher
from ..components.losses import masked_softmax_mse
from ..components.ramps import sigmoid_rampup
from ..data.sample import IGNORE_INDEX
from ..errors import SemisegError
from ..registry import METHODS
from .base import Method, MethodParams

CONSISTENCY_WEIGHT = 100.0  # λ_mt: `unsup_weight = 100` of the released MeanTeacher config
EMA_DECAY = 0.99  # constant, parameters only
RAMPUP_FRACTION = 0.1  # t_r / T
CONSISTENCY_ON = ("unlabeled", "all")


@dataclass
class MeanTeacherParams(MethodParams):
    consistency_weight: float = CONSISTENCY_WEIGHT
    ema_decay: float = EMA_DECAY
    rampup_fraction: float = RAMPUP_FRACTION
    consistency_on: str = "unlabeled"  # unlabeled | all (released: labeled + unlabeled)
    ohem_min_kept_per_image: int = 50_000  # CPS family (Cityscapes, supervised_loss: ohem)


@METHODS.register("mean_teacher")
class MeanTeacher(Method):
    Params = MeanTeacherParams
    num_strong_views = 0  # the weak view only

    def __init__(self, model, params: MeanTeacherParams):
        super().__init__(model, params)
        if params.consistency_on not in CONSISTENCY_ON:
            raise SemisegError(f"invalid value for 'method.consistency_on': '{params.consistency_on}'; "
                               f"choose one of {', '.join(CONSISTENCY_ON)}")
        self.teacher = make_teacher(model)

    def training_step(self, batch, progress):
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        x_l, y_l = labeled["image"], labeled["mask"]
        x_u, valid_u = unlabeled["image_w"], unlabeled["valid"]

        logits = self.model(torch.cat([x_l, x_u]))
        z_l, z_u = logits[: len(x_l)], logits[len(x_l):]
        loss_x = self.supervised_loss(z_l, y_l)

        if self.params.consistency_on == "all":
            with torch.no_grad():
                teacher_logits = self.teacher(torch.cat([x_l, x_u]))
            student_logits, valid = logits, torch.cat([y_l != IGNORE_INDEX, valid_u.bool()])
        else:
            with torch.no_grad():
                teacher_logits = self.teacher(x_u)
            student_logits, valid = z_u, valid_u
        loss_mt = masked_softmax_mse(student_logits, teacher_logits, valid)
        ramp = sigmoid_rampup(progress, self.params.rampup_fraction)
        loss = loss_x + self.params.consistency_weight * ramp * loss_mt
        return loss, {"loss_x": loss_x.detach(), "loss_mt": loss_mt.detach(), "rampup": torch.tensor(ramp)}

    def after_step(self):
        ema_update(self.teacher, self.model, self.params.ema_decay, include_buffers=False)
