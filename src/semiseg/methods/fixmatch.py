"""FixMatch for segmentation, UniMatch's variant (methods.md §3).

    (ŷ, q)  = argmax / max softmax sg(f(x_w))      # same train-mode forward as x_l
    x_s     = strong view of x_w, box region from the partner ((i+1) mod B; `partner: flip` = B−1−i)
    L_s     = masked CE of f(x_s) against ŷ mixed the same way, m = 1[q ≥ τ]
    L       = (L_x + L_s) / 2
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..components.cutmix import mix
from ..components.losses import masked_ce
from ..components.selection import pseudo_labels, select_by_threshold
from ..registry import METHODS
from .base import Method, MethodParams

# Loss weights of L = (w_x·L_x + w_s·L_s) (released `fixmatch.py`: (L_x + L_s) / 2).
WEIGHT_SUPERVISED = 0.5
WEIGHT_STRONG = 0.5


@dataclass
class FixMatchParams(MethodParams):
    threshold: float = 0.95  # τ: 0.95 Pascal/COCO, 0 Cityscapes (§5.4)
    partner: str = "roll"  # CutMix partner: roll = (i+1) mod B (§0.6 DECISION) | flip = released V2


@METHODS.register("fixmatch")
class FixMatch(Method):
    Params = FixMatchParams
    num_strong_views = 1

    def training_step(self, batch, progress):
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        x_l, y_l = labeled["image"], labeled["mask"]
        x_w, valid = unlabeled["image_w"], unlabeled["valid"]
        x_s, box = unlabeled["image_s"][:, 0], unlabeled["box"][:, 0]

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
