"""Mean Teacher (Tarvainen & Valpola, NeurIPS 2017) as the segmentation baseline of CPS
(docs/methods/mean_teacher.md).

    θ'  ← copy of θ at t = 0;  after every optimiser step  θ' ← 0.99·θ' + 0.01·θ   (parameters only)
    L   = CE(f_θ(x_l), y_l) + λ_mt·r(t)·L_mse
    L_mse = mean over the valid B_u·C·H·W elements of (softmax f_θ(x_u) − sg(softmax f_θ'(x_u)))²
    r(t)  = exp(−5·(1 − min(t, t_r)/t_r)²),  t_r = 0.1·T

Released code (`charlesCXK/TorchSemiSeg`, MeanTeacher): both networks see the same weak images in
train mode (the teacher's BN uses batch statistics and keeps its own running statistics), λ_mt = 100.
Our differences, all switchable: the EMA runs after the optimiser step (released: inside the forward,
one step behind), the consistency covers the unlabeled images only (`consistency_on: all` =
released, labeled padding excluded), and the weight ramps up over 10 % of T (`rampup_fraction: 0` =
released). The student is evaluated (as released).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict

import torch

from ..components.ema import EMATeacher
from ..components.losses import masked_softmax_mse
from ..components.ramps import sigmoid_rampup
from ..labels import IGNORE_INDEX
from ..config_checks import real_at_least, real_between
from ..registry import METHODS
from .base import Method, MethodParams
from .interface import Views

CONSISTENCY_WEIGHT = 100.0  # λ_mt: `unsup_weight = 100` of the released MeanTeacher config
EMA_DECAY = 0.99  # constant, parameters only
RAMPUP_FRACTION = 0.1  # t_r / T
CONSISTENCY_ON = ("unlabeled", "all")


@dataclass
class MeanTeacherParams(MethodParams):
    ranges: ClassVar[Dict[str, tuple]] = {"consistency_weight": real_at_least(0), "ema_decay": real_between(0, 1, True),
                                          "rampup_fraction": real_between(0, 1)}

    consistency_weight: float = CONSISTENCY_WEIGHT  # λ_mt, the weight of the consistency term
    ema_decay: float = EMA_DECAY  # α: the teacher's constant EMA decay (parameters only)
    rampup_fraction: float = RAMPUP_FRACTION  # t_r / T of the sigmoid ramp-up of λ_mt (0: none, as released)
    consistency_on: str = "unlabeled"  # unlabeled | all (released: labeled + unlabeled)
    ohem_min_kept_per_image: int = 50_000  # CPS family (Cityscapes, supervised_loss: ohem)

    choices: ClassVar[Dict[str, tuple]] = {"consistency_on": CONSISTENCY_ON}


@METHODS.register("mean_teacher")
class MeanTeacher(Method):
    Params = MeanTeacherParams
    variants = {"released": {"consistency_on": "all", "rampup_fraction": 0.0}}

    def __init__(self, model, params: MeanTeacherParams):
        super().__init__(model, params)
        # train-mode teacher (BN on batch statistics, its own running statistics), as released
        self.teacher = EMATeacher(model, params.ema_decay, warmup=False, include_buffers=False,
                                  batch_statistics=True)

    def views(self) -> Views:
        return Views(unlabeled=True, weak_pipeline="cps")  # the weak view only

    def training_step(self, batch, ctx):
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
        ramp = sigmoid_rampup(ctx.progress, self.params.rampup_fraction)
        loss = loss_x + self.params.consistency_weight * ramp * loss_mt
        return loss, {"loss_x": loss_x.detach(), "loss_mt": loss_mt.detach(), "rampup": torch.tensor(ramp)}

    def after_step(self):
        self.teacher.update(self.model)
