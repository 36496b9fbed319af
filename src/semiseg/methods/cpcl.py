"""CPCL: Conservative-Progressive Collaborative Learning (Fan et al., IEEE TIP 2023) (docs/methods/cpcl.md).

Two branches on CPS+CutMix's data (toggled 3-box masks, partner (i+1) mod B). Each branch's logits on
the unlabeled images, without gradient and mixed like the images, give ŷ_k and its confidence c_k; the
class-wise disagreement indicator K (counted over the valid pixels of the global batch) weighs the
classes the branches often confuse:

    ŷ∩ = ŷ_1 where ŷ_1 = ŷ_2, else ignore                  (pseudo-intersection: seek common ground)
    ŷ∪ = ŷ_1 where they agree, else the label whose class has the larger disagreement weight ω
         (a tie goes to branch 2)                            (pseudo-union: reserve differences)
    β∩ = (c_1 + c_2)/2;  β∪ = (c_1 + c_2)/2 where they agree, else the chosen branch's confidence
    L_inter = Σ v·β∩·CE(f_1(x_m), ŷ∩) / Σ v                 branch 1, the conservative one
    L_union = Σ v·β∪·CE(f_2(x_m), ŷ∪) / Σ v                 branch 2, the progressive one
    L       = CE(f_1(x_l), y) + CE(f_2(x_l), y) + λ_u·(L_inter + L_union),   λ_u = 1 (VOC), 5 (Cityscapes)

Branch 1 predicts.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar, Dict

import torch

from ..components.collaborative_labels import collaborative_labels
from ..components.cutmix import ToggledBoxes, mix
from ..components.losses import masked_ce, ohem_ce, supervised_ce
from ..components.norm_statistics import keep_norm_statistics
from ..config_checks import real_at_least
from ..models.init import kaiming_init_head
from ..registry import METHODS
from .base import CutMixParams, Method
from .interface import Views
from .panels import Panel, image_panel, labels_panel

# Cityscapes class weights of the CPCL / DUEB releases' class-weighted OHEM (docs/methods/cpcl.md)
CITYSCAPES_CLASS_WEIGHTS = (0.8373, 0.918, 0.866, 1.0345, 1.0166, 0.9969, 0.9754, 1.0489, 0.8786, 1.0023, 0.9539,
                            0.9843, 1.1116, 0.9037, 1.0865, 1.0955, 1.0865, 1.1529, 1.0507)


@dataclass
class CPCLParams(CutMixParams):
    unsup_weight: float = 1.0  # λ_u: 1 (VOC), 5 (Cityscapes)
    cityscapes_class_weights: bool = False  # the supervised CE / OHEM weighted per class (Cityscapes, as released)
    ohem_min_kept_per_image: int = 50_000  # CPS family (Cityscapes, supervised_loss: ohem)

    ranges: ClassVar[Dict[str, tuple]] = {"unsup_weight": real_at_least(0)}


@METHODS.register("cpcl")
class CPCL(Method):
    Params = CPCLParams
    variants = {"flip_partner": {"partner": "flip"}}

    def __init__(self, model, params: CPCLParams):
        super().__init__(model, params)
        self.model2 = copy.deepcopy(model)
        kaiming_init_head(self.model)
        kaiming_init_head(self.model2)
        self.num_classes = model.num_classes
        if params.cityscapes_class_weights:
            if self.num_classes != len(CITYSCAPES_CLASS_WEIGHTS):
                from ..errors import SemisegError
                raise SemisegError(f"method.cityscapes_class_weights needs the 19 Cityscapes classes, the dataset "
                                   f"has {self.num_classes}; set it to false")
            self.register_buffer("class_weight", torch.tensor(CITYSCAPES_CLASS_WEIGHTS), persistent=False)
        else:
            self.class_weight = None

    def views(self) -> Views:
        return Views(unlabeled=True, weak_pipeline="cps", box=ToggledBoxes())

    def supervised_loss(self, logits, target):
        """CE, or OHEM on Cityscapes; weighted per class with `cityscapes_class_weights`."""
        if self.params.supervised_loss == "ohem":
            return ohem_ce(logits, target, self.params.ohem_threshold,
                           self.params.ohem_min_kept_per_image * logits.shape[0], class_weight=self.class_weight)
        return supervised_ce(logits, target, class_weight=self.class_weight)

    def mixed_pair(self, unlabeled):
        """(x_m, z̃_1, z̃_2, v_m): the mixed images, both branches' no-grad train-mode logits mixed alike."""
        x_u, valid, box = unlabeled["image_w"], unlabeled["valid"].bool(), unlabeled["box"][:, 0]
        rule = self.params.partner
        with torch.no_grad():
            teacher1, teacher2 = (mix(net(x_u), box, rule=rule) for net in (self.model, self.model2))
        return mix(x_u, box, rule=rule), teacher1, teacher2, mix(valid, box, rule=rule)

    def training_step(self, batch, ctx):
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        x_l, y_l = labeled["image"], labeled["mask"]
        loss_x = self.supervised_loss(self.model(x_l), y_l) + self.supervised_loss(self.model2(x_l), y_l)
        x_m, teacher1, teacher2, valid = self.mixed_pair(unlabeled)
        labels = collaborative_labels(teacher1, teacher2, valid, self.num_classes)
        z1, z2 = self.model(x_m), self.model2(x_m)
        loss_inter = masked_ce(z1, labels.intersection, labels.beta_inter, valid)
        loss_union = masked_ce(z2, labels.union, labels.beta_union, valid)
        loss = loss_x + self.params.unsup_weight * (loss_inter + loss_union)
        return loss, {"loss_x": loss_x.detach(), "loss_inter": loss_inter.detach(),
                      "loss_union": loss_union.detach(), "overlap": labels.overlap}

    def trainable_modules(self):
        return [self.model, self.model2]

    @torch.no_grad()
    def explain(self, batch, ctx):
        """For the first mixed unlabeled image: both branches' pseudo-labels, the intersection and union labels,
        and their confidence weights (computed as the step does, BatchNorm statistics restored)."""
        with keep_norm_statistics(self):
            x_m, teacher1, teacher2, valid = self.mixed_pair(batch["unlabeled"])
        labels = collaborative_labels(teacher1, teacher2, valid, self.num_classes)
        ignore = torch.full_like(labels.union[0], 255)
        ok = valid[0].bool()
        return [image_panel(x_m[0], "unlabeled image (CutMixed)"),
                labels_panel(torch.where(ok, teacher1[0].argmax(dim=0), ignore), "branch 1 (conservative): ŷ_1"),
                labels_panel(torch.where(ok, teacher2[0].argmax(dim=0), ignore), "branch 2 (progressive): ŷ_2"),
                labels_panel(labels.intersection[0], f"intersection ŷ∩ (overlap {float(labels.overlap):.2f})"),
                labels_panel(labels.union[0], "union ŷ∪"),
                Panel("weight β∩", "scalar_map", (labels.beta_inter[0] * ok).cpu().numpy(), {"label": "β∩"}),
                Panel("weight β∪", "scalar_map", (labels.beta_union[0] * ok).cpu().numpy(), {"label": "β∪"})]
