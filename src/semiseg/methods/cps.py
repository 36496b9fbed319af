"""Cross Pseudo Supervision (Chen et al., CVPR 2021), with and without CutMix (docs/methods/cps.md).

Two networks f_1, f_2 of the same architecture, differing only in their head initialisation
(both encoders start from the same weights; the heads are re-drawn Kaiming-normal, fan_in).
Each is supervised by the other's hard pseudo-labels ŷ_k = argmax sg(z_k):

  CPS (`cutmix: false`), on the labeled and the unlabeled images alike:
      L_cps = CE(z_1, ŷ_2) + CE(z_2, ŷ_1)                           mean over valid pixels
      L     = CE(f_1(x_l), y_l) + CE(f_2(x_l), y_l) + λ·L_cps,      λ = 1.5 (VOC), 6 (Cityscapes)

  CPS+CutMix (`cutmix: true`, default), unlabeled images only:
      M      = G2 3-box mask;  x_m = x_u·(1 − M) + x_p·M,  partner p = (i+1) mod B
               (`partner: flip` = B−1−i); the masks are drawn by the data pipeline (`ToggledBoxes`)
      ŷ_k    = argmax of sg(f_k(x_u)) mixed with the same M (train-mode BN, as released)
      L_cps  = CE(f_1(x_m), ŷ_2) + CE(f_2(x_m), ŷ_1)                mean over valid pixels (v mixed by M)
      L      = CE(f_1(x_l), y_l) + CE(f_2(x_l), y_l) + λ·L_cps,     λ = 1 (VOC), 5 (Cityscapes)

Padding never counts: unlabeled pixels are weighted by v, labeled ones by y ≠ 255 (which also
leaves out VOC's 255 object borders; the release has no padding mask at all). One optimiser holds
both branches (SGD is per parameter, so this equals one optimiser per branch); branch 1 predicts.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar, Dict, Optional

import torch

from ..components.cutmix import ToggledBoxes, mix
from ..components.losses import masked_ce
from ..components.selection import pseudo_labels
from ..labels import IGNORE_INDEX
from ..models.init import kaiming_init_head
from ..config_checks import optional, real_at_least
from ..registry import METHODS
from .base import CutMixParams, Method
from .interface import Views

# λ on Pascal VOC (released `config.py`); Cityscapes configs set 6 (CPS) / 5 (CPS+CutMix).
CPS_WEIGHT = 1.5
CPS_CUTMIX_WEIGHT = 1.0


@dataclass
class CPSParams(CutMixParams):
    ranges: ClassVar[Dict[str, tuple]] = {"cps_weight": optional(real_at_least(0))}

    cutmix: bool = True  # CPS+CutMix (toggled 3-box masks); false: plain CPS, also on the labeled images
    cps_weight: Optional[float] = None  # λ; None: 1.0 with CutMix, 1.5 without (Pascal VOC)
    ohem_min_kept_per_image: int = 50_000  # CPS family (Cityscapes, supervised_loss: ohem)


@METHODS.register("cps")
class CPS(Method):
    Params = CPSParams
    variants = {"no_cutmix": {"cutmix": False}, "flip_partner": {"partner": "flip"}}

    def __init__(self, model, params: CPSParams):
        super().__init__(model, params)
        self.model2 = copy.deepcopy(model)
        kaiming_init_head(self.model)
        kaiming_init_head(self.model2)

    def views(self) -> Views:
        return Views(unlabeled=True, weak_pipeline="cps", box=ToggledBoxes() if self.params.cutmix else None)

    @property
    def cps_weight(self) -> float:
        if self.params.cps_weight is not None:
            return self.params.cps_weight
        return CPS_CUTMIX_WEIGHT if self.params.cutmix else CPS_WEIGHT

    def training_step(self, batch, ctx):
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        x_l, y_l = labeled["image"], labeled["mask"]
        x_u, valid_u = unlabeled["image_w"], unlabeled["valid"]
        z1_l, z2_l = self.model(x_l), self.model2(x_l)
        loss_x = self.supervised_loss(z1_l, y_l) + self.supervised_loss(z2_l, y_l)
        if self.params.cutmix:
            z1, z2, target1, target2, valid = self._cutmix_pairs(x_u, valid_u, unlabeled["box"][:, 0])
        else:
            z1, z2, target1, target2, valid = self._plain_pairs(z1_l, z2_l, y_l, x_u, valid_u)
        ones = torch.ones_like(valid, dtype=torch.float)
        loss_cps = masked_ce(z1, target2, ones, valid) + masked_ce(z2, target1, ones, valid)
        loss = loss_x + self.cps_weight * loss_cps
        return loss, {"loss_x": loss_x.detach(), "loss_cps": loss_cps.detach()}

    def _plain_pairs(self, z1_l, z2_l, y_l, x_u, valid_u):
        """Students = pseudo-label sources: both branches on x_l and, separately, on x_u."""
        z1 = torch.cat([z1_l, self.model(x_u)])
        z2 = torch.cat([z2_l, self.model2(x_u)])
        valid = torch.cat([y_l != IGNORE_INDEX, valid_u.bool()])
        return z1, z2, pseudo_labels(z1)[0], pseudo_labels(z2)[0], valid

    def _cutmix_pairs(self, x_u, valid_u, boxes):
        """Pseudo-labels of x_u mixed by the toggled-box masks, students on the mixed images."""
        x_m, target1, target2, valid = self.cutmix_inputs(x_u, valid_u, boxes)
        return self.model(x_m), self.model2(x_m), target1, target2, valid

    def cutmix_inputs(self, x_u, valid_u, boxes):
        """(x_m, ŷ_1, ŷ_2, v_m): the mixed images, both branches' hard labels of x_u and the validity, mixed alike."""
        rule = self.params.partner
        with torch.no_grad():  # train-mode BN, as released
            target1 = mix(pseudo_labels(self.model(x_u))[0], boxes, rule=rule)
            target2 = mix(pseudo_labels(self.model2(x_u))[0], boxes, rule=rule)
        return mix(x_u, boxes, rule=rule), target1, target2, mix(valid_u.bool(), boxes, rule=rule)

    def trainable_modules(self):
        return [self.model, self.model2]
