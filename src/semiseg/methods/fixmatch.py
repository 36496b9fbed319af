"""FixMatch for segmentation, UniMatch's variant (docs/methods/fixmatch.md).

    (ŷ, q)  = argmax / max softmax sg(f(x_w))      # same train-mode forward as x_l
    x_s     = strong view of x_w, box region from the partner ((i+1) mod B; `partner: flip` = B−1−i)
    L_s     = masked CE of f(x_s) against ŷ mixed the same way, m = 1[q ≥ τ]
    L       = (L_x + L_s) / 2

`teacher: ema` gives UniMatch V2's FixMatch: ŷ and q come from an EMA teacher of the student
(λ_t = min(1 − 1/(t+1), 0.996), parameters and buffers, always in eval mode), which also predicts;
the labeled batch then has its own forward. Use it with V2's network and AdamW.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict

import torch

from ..components.cutmix import UniMatchBox
from ..components.ema import EMATeacher
from ..components.mixed_pseudo_labels import mix_strong_views, mixed_pseudo_label_loss
from ..components.selection import SELECTIONS, reliable_ratio, select_pseudo_labels
from ..config_checks import real_between
from ..registry import METHODS
from .base import CutMixParams, Method, SelectionParams
from .interface import Views

TEACHERS = ("none", "ema")


@dataclass
class FixMatchParams(SelectionParams, CutMixParams):
    threshold: float = 0.95  # τ: 0.95 Pascal/COCO, 0 Cityscapes (UniMatch's FixMatch configs)
    selection: str = "threshold"  # pseudo-label selection: threshold (1[q ≥ τ]) | csl (CSL's weights)
    teacher: str = "none"  # none: labels from the student's own weak-view forward | ema: V2's FixMatch
    ema_decay: float = 0.996  # α of the EMA teacher (teacher: ema)

    choices: ClassVar[Dict[str, tuple]] = {"teacher": TEACHERS, "selection": SELECTIONS}
    ranges: ClassVar[Dict[str, tuple]] = {"threshold": real_between(0, 1), "ema_decay": real_between(0, 1, True)}


@METHODS.register("fixmatch")
class FixMatch(Method):
    Params = FixMatchParams
    variants = {"ema_teacher": {"teacher": "ema"}, "flip_partner": {"partner": "flip"}, "csl_selection": {"selection": "csl"}}

    def __init__(self, model, params: FixMatchParams):
        super().__init__(model, params)
        if params.teacher == "ema":
            self.teacher = EMATeacher(model, params.ema_decay, warmup=True, include_buffers=True)

    def views(self) -> Views:
        return Views(unlabeled=True, strong=1, box=UniMatchBox())

    @property
    def has_teacher(self) -> bool:
        return self.params.teacher == "ema"

    def training_step(self, batch, ctx):
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        x_l, y_l = labeled["image"], labeled["mask"]
        x_w, valid, box = unlabeled["image_w"], unlabeled["valid"], unlabeled["box"]
        rule = self.params.partner

        if self.has_teacher:
            with torch.no_grad():
                pseudo, weight = select_pseudo_labels(self.teacher(x_w), valid, self.params)
            z_l = self.model(x_l)
        else:
            logits = self.model(torch.cat([x_l, x_w]))
            z_l, z_w = logits[: len(x_l)], logits[len(x_l):]
            pseudo, weight = select_pseudo_labels(z_w, valid, self.params)

        z_s = self.model(mix_strong_views(unlabeled["image_s"], box, rule))
        loss_x = self.supervised_loss(z_l, y_l)
        loss_s = mixed_pseudo_label_loss(z_s, pseudo, weight, valid, box[:, 0], rule)
        loss = (loss_x + loss_s) / 2
        return loss, {"loss_x": loss_x.detach(), "loss_s": loss_s.detach(),
                      "mask_ratio": reliable_ratio(weight, valid)}

    def after_step(self):
        if self.has_teacher:
            self.teacher.update(self.model)

    @torch.no_grad()
    def predict(self, images):
        return self.teacher(images) if self.has_teacher else self.model(images)
