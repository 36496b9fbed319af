"""FixMatch for segmentation, UniMatch's variant (methods.md §3).

    (ŷ, q)  = argmax / max softmax sg(f(x_w))      # same train-mode forward as x_l
    x_s     = strong view of x_w, box region from the partner ((i+1) mod B; `partner: flip` = B−1−i)
    L_s     = masked CE of f(x_s) against ŷ mixed the same way, m = 1[q ≥ τ]
    L       = (L_x + L_s) / 2

`teacher: ema` gives UniMatch V2's FixMatch (§3): ŷ and q come from an EMA teacher of the student
(λ_t = min(1 − 1/(t+1), 0.996), parameters and buffers, always in eval mode), which also predicts;
the labeled batch then has its own forward. Use it with V2's network and AdamW.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..components.cutmix import mix
from ..components.ema import ema_update, make_teacher, warmup_decay
from ..components.losses import masked_ce
from ..components.selection import pseudo_labels, select_by_threshold
from ..errors import SemisegError
from ..registry import METHODS
from .base import Method, MethodParams

# Loss weights of L = (w_x·L_x + w_s·L_s) (released `fixmatch.py`: (L_x + L_s) / 2).
WEIGHT_SUPERVISED = 0.5
WEIGHT_STRONG = 0.5


@dataclass
class FixMatchParams(MethodParams):
    threshold: float = 0.95  # τ: 0.95 Pascal/COCO, 0 Cityscapes (§5.4)
    partner: str = "roll"  # CutMix partner: roll = (i+1) mod B (§0.6 DECISION) | flip = released V2
    teacher: str = "none"  # none: labels from the student's own weak-view forward | ema: V2's FixMatch
    ema_decay: float = 0.996  # α of the EMA teacher (teacher: ema)


TEACHERS = ("none", "ema")


@METHODS.register("fixmatch")
class FixMatch(Method):
    Params = FixMatchParams
    num_strong_views = 1

    def __init__(self, model, params: FixMatchParams):
        super().__init__(model, params)
        if params.teacher not in TEACHERS:
            raise SemisegError(f"invalid value for 'method.teacher': '{params.teacher}'; "
                               f"choose one of {', '.join(TEACHERS)}")
        if params.teacher == "ema":
            self.teacher = make_teacher(model).eval()
            self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))

    @property
    def has_teacher(self) -> bool:
        return self.params.teacher == "ema"

    def train(self, mode: bool = True):
        super().train(mode)
        if self.has_teacher:
            self.teacher.eval()  # the EMA teacher never uses batch statistics
        return self

    def training_step(self, batch, progress):
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        x_l, y_l = labeled["image"], labeled["mask"]
        x_w, valid = unlabeled["image_w"], unlabeled["valid"]
        x_s, box = unlabeled["image_s"][:, 0], unlabeled["box"][:, 0]

        if self.has_teacher:
            with torch.no_grad():
                pseudo, confidence = pseudo_labels(self.teacher(x_w))
            z_l = self.model(x_l)
        else:
            logits = self.model(torch.cat([x_l, x_w]))
            z_l, z_w = logits[: len(x_l)], logits[len(x_l):]
            pseudo, confidence = pseudo_labels(z_w)

        rule = self.params.partner
        z_s = self.model(mix(x_s, box, rule=rule))
        selected = select_by_threshold(mix(confidence, box, rule=rule), self.params.threshold)
        loss_x = self.supervised_loss(z_l, y_l)
        loss_s = masked_ce(z_s, mix(pseudo, box, rule=rule), selected, mix(valid, box, rule=rule))
        loss = WEIGHT_SUPERVISED * loss_x + WEIGHT_STRONG * loss_s

        ratio = (select_by_threshold(confidence, self.params.threshold) * valid).sum() / valid.sum().clamp_min(1)
        return loss, {"loss_x": loss_x.detach(), "loss_s": loss_s.detach(), "mask_ratio": ratio.detach()}

    def after_step(self):
        if self.has_teacher:
            decay = warmup_decay(int(self.ema_updates), self.params.ema_decay)
            ema_update(self.teacher, self.model, decay, include_buffers=True)
            self.ema_updates += 1

    @torch.no_grad()
    def predict(self, images):
        return self.teacher(images) if self.has_teacher else self.model(images)
