"""UniMatch V2 (Yang et al., arXiv 2410.10777): an EMA teacher and complementary dropout
(docs/methods/unimatch_v2.md).

    θ'        = EMA of θ after every step, λ_t = min(1 − 1/(t+1), 0.996), parameters and buffers
                (integer buffers copied); θ' always in eval mode
    (ŷ, q)    = argmax / max softmax f_θ'(x_w)                      the teacher labels the weak view
    z_l       = f_θ(x_l)                                            its own forward
    z_s1,z_s2 = f_θ(cat(x_s1, x_s2)) with complementary channel dropout on the encoder features:
                view s2 of a pair keeps the channels view s1 drops, half of the pairs unperturbed
    L_sk      = masked CE(z_sk, ŷ^k, 1[q^k ≥ τ], v^k)               box k from the partner (i+1) mod B
                (released: the batch reversed, `partner: flip`)
    L         = (L_x + (L_s1 + L_s2) / 2) / 2,  τ = 0.95 on every dataset

Network: DINOv2 ViT + DPT head (`model.name: dpt`), AdamW (lr 5e-6 encoder, x40 head, wd 0.01),
set in the configs; the method itself works with any model that has the `perturb` hook. The EMA
teacher predicts (the primary model). Unlabeled images need no masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict

import torch

from ..components.cutmix import UniMatchBox
from ..components.ema import EMATeacher
from ..components.mixed_pseudo_labels import mix_strong_views, mixed_pseudo_label_losses
from ..components.perturbation import complementary_channel_dropout
from ..components.selection import SELECTIONS, reliable_ratio, select_pseudo_labels
from ..config_checks import real_between
from ..registry import METHODS
from .base import CutMixParams, Method, SelectionParams
from .interface import Views


@dataclass
class UniMatchV2Params(SelectionParams, CutMixParams):
    ranges: ClassVar[Dict[str, tuple]] = {"threshold": real_between(0, 1), "ema_decay": real_between(0, 1, True)}
    choices: ClassVar[Dict[str, tuple]] = {"selection": SELECTIONS}

    threshold: float = 0.95  # τ on all datasets, Cityscapes included
    selection: str = "threshold"  # pseudo-label selection: threshold (1[q ≥ τ]) | csl (CSL's weights)
    ema_decay: float = 0.996  # α of λ_t = min(1 − 1/(t+1), α)


@METHODS.register("unimatch_v2")
class UniMatchV2(Method):
    Params = UniMatchV2Params
    variants = {"flip_partner": {"partner": "flip"}, "csl_selection": {"selection": "csl"}}

    def __init__(self, model, params: UniMatchV2Params):
        super().__init__(model, params)
        self.teacher = EMATeacher(model, params.ema_decay, warmup=True, include_buffers=True)

    def views(self) -> Views:
        return Views(unlabeled=True, strong=2, box=UniMatchBox())

    def training_step(self, batch, ctx):
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        x_l, y_l = labeled["image"], labeled["mask"]
        x_w, valid, boxes = unlabeled["image_w"], unlabeled["valid"], unlabeled["box"]
        rule = self.params.partner

        with torch.no_grad():
            pseudo, weight = select_pseudo_labels(self.teacher(x_w), valid, self.params)
        z_l = self.model(x_l)
        strong = mix_strong_views(unlabeled["image_s"], boxes, rule)
        z_s = self.model(strong, perturb=complementary_channel_dropout).chunk(2)
        loss_s1, loss_s2 = mixed_pseudo_label_losses(z_s, pseudo, weight, valid, boxes, rule)
        loss_x = self.supervised_loss(z_l, y_l)
        loss = (loss_x + (loss_s1 + loss_s2) / 2) / 2
        return loss, {"loss_x": loss_x.detach(), "loss_s1": loss_s1.detach(), "loss_s2": loss_s2.detach(),
                      "mask_ratio": reliable_ratio(weight, valid)}

    def after_step(self):
        self.teacher.update(self.model)

    @torch.no_grad()
    def predict(self, images):
        return self.teacher(images)
