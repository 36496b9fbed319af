"""UniMatch V2 (Yang et al., arXiv 2410.10777): an EMA teacher and complementary dropout (methods.md §6).

    θ'        = copy of θ; after step t  θ' ← λ_t·θ' + (1 − λ_t)·θ,  λ_t = min(1 − 1/(t+1), 0.996),
                over parameters and buffers (integer buffers copied, P18); θ' always in eval mode
    (ŷ, q)    = argmax / max softmax f_θ'(x_w)                      the teacher labels the weak view
    z_l       = f_θ(x_l)                                            its own forward
    z_s1,z_s2 = f_θ(cat(x_s1, x_s2)) with complementary channel dropout on the encoder features:
                view s2 of a pair keeps the channels view s1 drops, half of the pairs unperturbed
    L_sk      = masked CE(z_sk, ŷ^k, 1[q^k ≥ τ], v^k)               box k from the partner (i+1) mod B
                (released: the batch reversed, `partner: flip`)
    L         = (L_x + (L_s1 + L_s2)/2) / 2,  τ = 0.95 on every dataset

Network: DINOv2 ViT + DPT head (`model.name: dpt`), AdamW (lr 5e-6 encoder, x40 head, wd 0.01),
set in the configs; the method itself works with any model that has the `perturb` hook. The EMA
teacher predicts (the primary model). Unlabeled images need no masks (P30).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..components.cutmix import mix
from ..components.ema import ema_update, make_teacher, warmup_decay
from ..components.losses import masked_ce
from ..components.perturbation import complementary_channel_dropout
from ..components.selection import pseudo_labels, select_by_threshold
from ..registry import METHODS
from .base import Method, MethodParams

# Effective weights of L = (L_x + (L_s1 + L_s2)/2) / 2 (released `unimatch_v2.py`).
WEIGHT_SUPERVISED = 0.5
WEIGHT_STRONG_EACH = 0.25
EMA_DECAY = 0.996


@dataclass
class UniMatchV2Params(MethodParams):
    threshold: float = 0.95  # τ on all datasets, Cityscapes included (§6.1)
    ema_decay: float = EMA_DECAY  # α of λ_t = min(1 − 1/(t+1), α)
    partner: str = "roll"  # CutMix partner: roll = (i+1) mod B (§0.6 DECISION) | flip = released V2


@METHODS.register("unimatch_v2")
class UniMatchV2(Method):
    Params = UniMatchV2Params
    num_strong_views = 2

    def __init__(self, model, params: UniMatchV2Params):
        super().__init__(model, params)
        self.teacher = make_teacher(model)
        self.teacher.eval()
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))  # t of the next update

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # the teacher never uses batch statistics
        return self

    def training_step(self, batch, progress):
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        x_l, y_l = labeled["image"], labeled["mask"]
        x_w, valid = unlabeled["image_w"], unlabeled["valid"]
        x_s, boxes = unlabeled["image_s"], unlabeled["box"]
        tau = self.params.threshold

        with torch.no_grad():
            pseudo, confidence = pseudo_labels(self.teacher(x_w))
        z_l = self.model(x_l)
        rule = self.params.partner
        strong = torch.cat([mix(x_s[:, k], boxes[:, k], rule=rule) for k in range(2)])
        z_s = self.model(strong, perturb=complementary_channel_dropout).chunk(2)
        loss_s = []
        for k in range(2):
            box = boxes[:, k]
            selected = select_by_threshold(mix(confidence, box, rule=rule), tau)
            loss_s.append(masked_ce(z_s[k], mix(pseudo, box, rule=rule), selected, mix(valid, box, rule=rule)))
        loss_x = self.supervised_loss(z_l, y_l)
        loss = WEIGHT_SUPERVISED * loss_x + WEIGHT_STRONG_EACH * (loss_s[0] + loss_s[1])

        ratio = (select_by_threshold(confidence, tau) * valid).sum() / valid.sum().clamp_min(1)
        return loss, {"loss_x": loss_x.detach(), "loss_s1": loss_s[0].detach(), "loss_s2": loss_s[1].detach(),
                      "mask_ratio": ratio.detach()}

    def after_step(self):
        decay = warmup_decay(int(self.ema_updates), self.params.ema_decay)
        ema_update(self.teacher, self.model, decay, include_buffers=True)
        self.ema_updates += 1

    @torch.no_grad()
    def predict(self, images):
        return self.teacher(images)
