"""UniMatch V1 (Yang et al., CVPR 2023): unified dual-stream perturbations (methods.md §5).

    z, z_fp  = f(cat(x_l, x_w)) with the FP stream: the decoder also runs on Dropout2d(0.5) of the
               encoder features (the labeled half of z_fp is discarded, as released)
    (ŷ, q)   = argmax / max softmax sg(z_w)                         same train-mode forward as x_l
    x_sk     = strong view k with its own G1 box filled from the partner, k = 1, 2
               (partner (i+1) mod B; `partner: flip` = B−1−i)
    ŷ^k, q^k, v^k = ŷ, q, v with box k taken from the partner
    L_sk     = masked CE(f(x_sk), ŷ^k, 1[q^k ≥ τ], v^k)             one forward of cat(x_s1, x_s2)
    L_fp     = masked CE(z_fp, ŷ, 1[q ≥ τ], v)
    L        = (L_x + 0.25·L_s1 + 0.25·L_s2 + 0.5·L_fp) / 2

τ = 0.95 (Pascal, COCO), 0 (Cityscapes). L_x is CE, OHEM on Cityscapes. The partner's targets are
the rolled maps of the same forward (the released extra eval-mode forward on the same image, P13 /
P31, is not reproduced).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..components.cutmix import mix
from ..components.losses import masked_ce
from ..components.perturbation import append_dropped_copy
from ..components.selection import pseudo_labels, select_by_threshold
from ..registry import METHODS
from .base import Method, MethodParams

# Effective weights of L = (L_x + 0.25·L_s1 + 0.25·L_s2 + 0.5·L_fp) / 2 (released `unimatch.py`).
WEIGHT_SUPERVISED = 0.5
WEIGHT_STRONG_EACH = 0.125
WEIGHT_FP = 0.25


@dataclass
class UniMatchParams(MethodParams):
    threshold: float = 0.95  # τ: 0.95 Pascal/COCO, 0 Cityscapes (§5.4)
    partner: str = "roll"  # CutMix partner: roll = (i+1) mod B (§0.6 DECISION) | flip = released V2


@METHODS.register("unimatch")
class UniMatch(Method):
    Params = UniMatchParams
    num_strong_views = 2

    def training_step(self, batch, progress):
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        x_l, y_l = labeled["image"], labeled["mask"]
        x_w, valid = unlabeled["image_w"], unlabeled["valid"]
        x_s, boxes = unlabeled["image_s"], unlabeled["box"]
        n_l, tau = len(x_l), self.params.threshold

        clean, perturbed = self.model(torch.cat([x_l, x_w]), perturb=append_dropped_copy).chunk(2)
        z_l, z_w, z_fp = clean[:n_l], clean[n_l:], perturbed[n_l:]
        pseudo, confidence = pseudo_labels(z_w)

        rule = self.params.partner
        strong = torch.cat([mix(x_s[:, k], boxes[:, k], rule=rule) for k in range(2)])
        z_s = self.model(strong).chunk(2)
        loss_s = []
        for k in range(2):
            box = boxes[:, k]
            selected = select_by_threshold(mix(confidence, box, rule=rule), tau)
            loss_s.append(masked_ce(z_s[k], mix(pseudo, box, rule=rule), selected, mix(valid, box, rule=rule)))
        loss_fp = masked_ce(z_fp, pseudo, select_by_threshold(confidence, tau), valid)
        loss_x = self.supervised_loss(z_l, y_l)
        loss = (WEIGHT_SUPERVISED * loss_x + WEIGHT_STRONG_EACH * (loss_s[0] + loss_s[1]) + WEIGHT_FP * loss_fp)

        ratio = (select_by_threshold(confidence, tau) * valid).sum() / valid.sum().clamp_min(1)
        return loss, {"loss_x": loss_x.detach(), "loss_s1": loss_s[0].detach(), "loss_s2": loss_s[1].detach(),
                      "loss_fp": loss_fp.detach(), "mask_ratio": ratio.detach()}
