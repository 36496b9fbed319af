"""RRN: Region Relevance Network (ICME 2023, arXiv 2304.11539) on CPS+CutMix (docs/methods/rrn.md).

Two CPS branches f_1, f_2 and one discriminator D_k per branch. The step, in the order of the paper's
modules:

  CPS+CutMix      x_m, ŷ_1, ŷ_2 (mixed hard labels, no gradient), z_k = f_k(x_m)
                  L_cps = CE(z_1, ŷ_2) + CE(z_2, ŷ_1)
  fake / real     u_k = cat(softmax(z_k), mm(x_m));  ρ = cat(onehot(y_l), mm(x_l))   (mm: per-sample min-max)
  filtering       with the discriminators' parameters frozen:
                    own   s_kk = D_k(u_k),   cross  s_k× = D_{3−k}(u_k)   (region scores on a G x G grid)
                    A_k  = up(s_kk > τ) ∧ v_m,   Bx_k = up(s_k× > τ) ∧ v_m
  local selection L_st,k = 1[t ≥ I]·( CEmean_{A_k}(z_k, ŷ^self_k) + CEmean_{Bx_k}(z_k, ŷ^self_k) ),
                  ŷ^self_k = argmax sg(z_k)   (the cross term is the dynamic region-loss correction)
  feature match   L_fm,k = mean_j | mean_b φ_k(ρ)_j − mean_b φ_k(u_k)_j |
  generator       L = CE(f_1(x_l), y_l) + CE(f_2(x_l), y_l) + λ_cps·L_cps + Σ_k (λ_fm·L_fm,k + λ_st·L_st,k)
  discriminator   L_D = Σ_k ½·( BCE(D_k(sg(u_k)), 0) + BCE(D_k(ρ), 1) )      (mean over region cells)

λ_cps = 1 (VOC), 5 (Cityscapes); λ_fm = 0.1, λ_st = 1.0, τ = 0.6. The segmentors train with SGD and the poly
schedule (update `model`), the discriminators with Adam at a constant rate (update `discriminator`), after
the generator's step: the discriminator loss reads the detached fakes, so stepping the segmentors first
changes nothing it sees. Inference: the average of both branches' logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict, List, Optional

import torch
import torch.nn.functional as F

from ..components.frozen_parameters import frozen_parameters
from ..components.losses import masked_ce
from ..components.norm_statistics import keep_norm_statistics
from ..components.region_acceptance import accepted_pixels, accepted_regions, regions_to_pixels
from ..components.region_discriminator import REGIONS, RegionDiscriminator, fake_input, real_input
from ..config_checks import int_at_least, optional, real_above, real_at_least, real_between
from ..registry import METHODS
from .cps import CPS, CPSParams
from .interface import Update
from .panels import Panel, image_panel, labels_panel

DISCRIMINATOR_BETAS = (0.9, 0.99)  # Adam of the released discriminators


@dataclass
class RRNParams(CPSParams):
    choices: ClassVar[Dict[str, tuple]] = {"cutmix": (True,), "region": REGIONS, "st_target": ("self", "cross"),
                                           "vote": ("logits", "probs")}
    ranges: ClassVar[Dict[str, tuple]] = {"tau": real_between(0, 1), "fm_weight": real_at_least(0),
                                          "st_weight": real_at_least(0), "grid": int_at_least(1),
                                          "tile": optional(int_at_least(1)), "st_start_epoch": int_at_least(0),
                                          "discriminator_lr": real_above(0)}

    cutmix: bool = True  # always true: RRN builds on CPS+CutMix
    tau: float = 0.6  # τ: a region is accepted when its score is above it [released code]
    fm_weight: float = 0.1  # λ_fm of the feature matching [released code]
    st_weight: float = 1.0  # λ_st of the local selection loss [released code]
    region: str = "tile"  # tile: a score per region of a grid | image: one per image (the released design)
    grid: int = 3  # G: a G x G grid of regions per crop
    tile: Optional[int] = None  # region side in pixels instead: G = max(1, round(side / tile)) per side
    compat_topleft_pool: bool = False  # region: image, scoring only the top-left 20 x 20 cells (release, crop 512)
    st_target: str = "self"  # target of L_st: self = the branch's own argmax [code] | cross = the other's ŷ
    st_start_epoch: int = 1  # L_st from epoch-equivalent t ≥ this x I on [code: `epoch > 0`]
    vote: str = "logits"  # inference: average of the branches' logits [code] | probs: of their softmax
    discriminator_lr: float = 1e-4  # Adam, constant rate, betas (0.9, 0.99), no weight decay [code]


@METHODS.register("rrn")
class RRN(CPS):
    Params = RRNParams
    variants = {"image_level": {"region": "image"}, "cross_target": {"st_target": "cross"}}

    def __init__(self, model, params: RRNParams):
        super().__init__(model, params)
        channels = model.num_classes + 3
        self.num_classes = model.num_classes
        self.discriminator1, self.discriminator2 = (
            RegionDiscriminator(channels, params.region, params.grid, params.tile, params.compat_topleft_pool)
            for _ in range(2))
        self._pending: List[tuple] = []  # per pass: (u_1, u_2, ρ) for the discriminator update

    def updates(self, train_cfg) -> List[Update]:
        segmentors = super().updates(train_cfg)[0]
        discriminators = [self.discriminator1, self.discriminator2]
        adam = torch.optim.Adam([p for d in discriminators for p in d.parameters()], lr=self.params.discriminator_lr,
                                betas=DISCRIMINATOR_BETAS, weight_decay=0.0)
        return [segmentors, Update("discriminator", adam, discriminators, self.discriminator_step, "constant")]

    def pairs(self):
        """(f_k, D_k, D_{3−k}) for k = 1, 2."""
        return ((self.model, self.discriminator1, self.discriminator2),
                (self.model2, self.discriminator2, self.discriminator1))

    def training_step(self, batch, ctx):
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        x_l, y_l = labeled["image"], labeled["mask"]
        p = self.params
        loss_x = self.supervised_loss(self.model(x_l), y_l) + self.supervised_loss(self.model2(x_l), y_l)
        x_m, target1, target2, valid = self.cutmix_inputs(unlabeled["image_w"], unlabeled["valid"],
                                                          unlabeled["box"][:, 0])
        z = (self.model(x_m), self.model2(x_m))
        ones = torch.ones_like(valid, dtype=torch.float)
        loss_cps = masked_ce(z[0], target2, ones, valid) + masked_ce(z[1], target1, ones, valid)

        real = real_input(y_l, x_l, self.num_classes)
        selecting = ctx.epoch >= p.st_start_epoch
        loss_st, loss_fm, fakes, own_rate, cross_rate = 0.0, 0.0, [], [], []
        for k, (net, own_d, other_d) in enumerate(self.pairs()):
            u = fake_input(z[k], x_m)
            with frozen_parameters(own_d, other_d):
                own, phi_fake = own_d(u)
                with torch.no_grad():
                    cross, _ = other_d(u)
                    _, phi_real = own_d(real)
            target = z[k].detach().argmax(dim=1) if p.st_target == "self" else (target2, target1)[k]
            if selecting:
                loss_st = loss_st + masked_ce(z[k], target, ones, accepted_pixels(own, p.tau, valid)) \
                    + masked_ce(z[k], target, ones, accepted_pixels(cross, p.tau, valid))
            loss_fm = loss_fm + (phi_real.float().mean(dim=0) - phi_fake.float().mean(dim=0)).abs().mean()
            own_rate.append(accepted_regions(own, p.tau).float().mean())
            cross_rate.append(accepted_regions(cross, p.tau).float().mean())
            fakes.append(u.detach())
        self._pending.append((*fakes, real))
        loss_st = torch.as_tensor(loss_st, device=x_l.device, dtype=torch.float)
        loss = loss_x + self.cps_weight * loss_cps + p.fm_weight * loss_fm + p.st_weight * loss_st
        return loss, {"loss_x": loss_x.detach(), "loss_cps": loss_cps.detach(), "loss_fm": loss_fm.detach(),
                      "loss_st": loss_st.detach(), "accepted_own": torch.stack(own_rate).mean(),
                      "accepted_cross": torch.stack(cross_rate).mean()}

    def discriminator_step(self, batch, ctx):
        """L_D = Σ_k ½·(BCE(D_k(sg(u_k)), 0) + BCE(D_k(ρ), 1)), each BCE the mean over region cells."""
        fake1, fake2, real = self._pending.pop(0)
        loss_d = 0.0
        for fake, discriminator in ((fake1, self.discriminator1), (fake2, self.discriminator2)):
            fake_scores, _ = discriminator(fake)
            real_scores, _ = discriminator(real)
            loss_d = loss_d + 0.5 * (
                F.binary_cross_entropy_with_logits(fake_scores.float(), torch.zeros_like(fake_scores, dtype=torch.float))
                + F.binary_cross_entropy_with_logits(real_scores.float(), torch.ones_like(real_scores, dtype=torch.float)))
        return loss_d, {}  # logged as `loss_discriminator`

    @torch.no_grad()
    def predict(self, images):
        z1, z2 = self.model(images), self.model2(images)
        if self.params.vote == "probs":
            return ((z1.float().softmax(dim=1) + z2.float().softmax(dim=1)) / 2).log()
        return (z1 + z2) / 2

    @torch.no_grad()
    def explain(self, batch, ctx):
        """For the first mixed unlabeled image: each branch's CPS pseudo-label, and each discriminator's region
        scores of that branch's prediction (own) and of the other branch's (cross), τ outlined: the regions
        above it are the accepted ones. Discriminators in eval mode (no dropout) so the picture is stable."""
        unlabeled, p = batch["unlabeled"], self.params
        was_training = [d.training for d in (self.discriminator1, self.discriminator2)]
        with keep_norm_statistics(self):
            x_m, target1, target2, valid = self.cutmix_inputs(unlabeled["image_w"], unlabeled["valid"],
                                                              unlabeled["box"][:, 0])
            z = (self.model(x_m), self.model2(x_m))
        panels = [image_panel(x_m[0], "unlabeled image (CutMixed)"),
                  labels_panel(target1[0], "branch 1: ŷ_1"), labels_panel(target2[0], "branch 2: ŷ_2")]
        height, width = x_m.shape[-2:]
        try:
            for d in (self.discriminator1, self.discriminator2):
                d.eval()
            for k, (_, own_d, other_d) in enumerate(self.pairs()):
                u = fake_input(z[k][:1], x_m[:1])
                for scorer, which in ((own_d, f"D_{k + 1}"), (other_d, f"D_{2 - k}")):
                    scores = scorer(u)[0].float().sigmoid()
                    rate = float((scores > p.tau).float().mean())
                    pixels = regions_to_pixels(scores, height, width)[0]
                    panels.append(Panel(f"{which} on branch {k + 1} (accepted {rate:.0%})", "scalar_map",
                                        pixels.cpu().numpy(), {"threshold": p.tau, "label": "region score"}))
        finally:
            for d, mode in zip((self.discriminator1, self.discriminator2), was_training):
                d.train(mode)
        return panels
