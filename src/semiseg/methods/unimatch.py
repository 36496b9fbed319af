"""UniMatch V1 (Yang et al., CVPR 2023): unified dual-stream perturbations (docs/methods/unimatch.md).

    z, z_fp  = f(cat(x_l, x_w)) with the FP stream: the decoder also runs on Dropout2d(0.5) of the
               encoder features (the labeled half of z_fp is discarded, as released)
    (ŷ, q)   = argmax / max softmax sg(z_w)                         same train-mode forward as x_l
    x_sk     = strong view k with its own box filled from the partner, k = 1, 2
               (partner (i+1) mod B; `partner: flip` = B−1−i)
    L_sk     = masked CE(f(x_sk), ŷ^k, 1[q^k ≥ τ], v^k)             one forward of cat(x_s1, x_s2)
    L_fp     = masked CE(z_fp, ŷ, 1[q ≥ τ], v)
    L        = (L_x + 0.25·L_s1 + 0.25·L_s2 + 0.5·L_fp) / 2

τ = 0.95 (Pascal, COCO), 0 (Cityscapes). L_x is CE, OHEM on Cityscapes. The partner's targets are
the rolled maps of the same forward (the released extra eval-mode forward on the same image is not
reproduced).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict

import torch

from ..components.cutmix import UniMatchBox
from ..components.losses import masked_ce
from ..components.mixed_pseudo_labels import mix_strong_views, mixed_pseudo_label_losses
from ..components.perturbation import append_dropped_copy
from ..components.selection import SELECTIONS, reliable_ratio, select_pseudo_labels
from ..config_checks import real_between
from ..registry import METHODS
from .base import CutMixParams, Method, SelectionParams
from .interface import Views


@dataclass
class UniMatchParams(SelectionParams, CutMixParams):
    ranges: ClassVar[Dict[str, tuple]] = {"threshold": real_between(0, 1)}
    choices: ClassVar[Dict[str, tuple]] = {"selection": SELECTIONS}

    threshold: float = 0.95  # τ: 0.95 Pascal/COCO, 0 Cityscapes
    selection: str = "threshold"  # pseudo-label selection: threshold (1[q ≥ τ]) | csl (CSL's weights)


@METHODS.register("unimatch")
class UniMatch(Method):
    Params = UniMatchParams
    variants = {"flip_partner": {"partner": "flip"}, "csl_selection": {"selection": "csl"}}

    def training_step(self, batch, ctx):
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        x_l, y_l = labeled["image"], labeled["mask"]
        x_w, valid, boxes = unlabeled["image_w"], unlabeled["valid"], unlabeled["box"]
        n_l, rule = len(x_l), self.params.partner

        clean, perturbed = self.model(torch.cat([x_l, x_w]), perturb=append_dropped_copy).chunk(2)
        z_l, z_w, z_fp = clean[:n_l], clean[n_l:], perturbed[n_l:]
        pseudo, weight = select_pseudo_labels(z_w, valid, self.params)

        z_s = self.model(mix_strong_views(unlabeled["image_s"], boxes, rule)).chunk(2)
        loss_s1, loss_s2 = mixed_pseudo_label_losses(z_s, pseudo, weight, valid, boxes, rule)
        loss_fp = masked_ce(z_fp, pseudo, weight, valid)
        loss_x = self.supervised_loss(z_l, y_l)
        loss = (loss_x + loss_s1 * 0.25 + loss_s2 * 0.25 + loss_fp * 0.5) / 2
        return loss, {"loss_x": loss_x.detach(), "loss_s1": loss_s1.detach(), "loss_s2": loss_s2.detach(),
                      "loss_fp": loss_fp.detach(), "mask_ratio": reliable_ratio(weight, valid)}

    def views(self) -> Views:
        return Views(unlabeled=True, strong=2, box=UniMatchBox())
