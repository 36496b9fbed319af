"""CSL: Confidence Separable Learning (ICCV 2025, "When Confidence Fails") (docs/methods/csl.md).

UniMatch V1's dual-stream loop whose fixed threshold is replaced by a per-image, confidence-separable
selection, and whose second strong view may hide its trusted pixels:

    z, z_fp  = f(cat(x_l, x_w)) with the FP stream (Dropout2d(0.5) of the encoder features)
    ŷ, w     = argmax softmax sg(z_w), CSL weights: per image, the pixels' (max confidence, residual
               dispersion) split in two by a spectral partition; w = 1 on the reliable side of the
               reliable cluster's boundary, exp(−cz²/α)·exp(−rz²/α) beyond, 0 on padding
    x_s1     = strong view 1 with its box from the partner (i+1) mod B
    x_s2     = with p = 0.5 a TMP view (photometric only, no box) whose trusted region
               R = K ∧ (w = 1) ∧ v is hidden (zero fill: the mean colour; partner fill: the partner's
               pixels and targets); otherwise a standard strong view with its box
    L_sk     = Σ w^k·v^k·CE(f(x_sk), ŷ^k) / Σ v^k,  L_fp = Σ w·v·CE(z_fp, ŷ) / Σ v
    L        = (L_x + 0.25·L_s1 + 0.25·L_s2 + 0.5·L_fp) / 2
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import ClassVar, Dict, List

import torch

from ..components.csl_selection import csl_weights
from ..components.cutmix import UniMatchBox, mix, partner_of
from ..components.losses import masked_ce
from ..components.norm_statistics import frozen_norm_statistics, keep_norm_statistics
from ..components.perturbation import append_dropped_copy
from ..components.selection import SELECTIONS, reliable_ratio, select_pseudo_labels
from ..components.trusted_mask import FILLS, TrustedMaskView, apply_trusted_mask, trusted_region
from ..config_checks import increasing_pair, int_at_least, real_between
from ..registry import METHODS
from .base import CutMixParams, Method, SelectionParams
from .interface import Views
from .panels import Panel, image_panel, labels_panel

WEIGHT_BANDS = ("w = 1 (trusted)", "0.01 ≤ w < 1 (soft)", "w < 0.01 (dropped)")


@dataclass
class CSLParams(SelectionParams, CutMixParams):
    selection: str = "csl"  # csl (the paper) | threshold (UniMatch V1's 1[q ≥ τ], for ablations)
    threshold: float = 0.95  # τ, only with selection: threshold
    tmp: bool = True  # Trusted Mask Perturbation on the second strong view
    tmp_prob: float = 0.5  # chance that a sample's second strong view is a TMP view
    tmp_block_size: int = 32  # side of a cover block, in pixels (G = round(S / block) cells per side)
    tmp_cover_ratio: float = 0.7  # chance that a block is covered
    tmp_fill: str = "zero"  # zero (the mean colour) | partner (the partner's pixels and targets)
    tmp_blur_sigma: List[float] = field(default_factory=lambda: [0.1, 2.0])  # σ range of the TMP view's blur
    compat_bn_restore: bool = False  # released: the strong-view forward leaves BN running statistics unchanged

    choices: ClassVar[Dict[str, tuple]] = {"selection": SELECTIONS, "tmp_fill": FILLS}
    ranges: ClassVar[Dict[str, tuple]] = {"threshold": real_between(0, 1), "tmp_prob": real_between(0, 1),
                                          "tmp_block_size": int_at_least(1), "tmp_cover_ratio": real_between(0, 1),
                                          "tmp_blur_sigma": increasing_pair()}


@METHODS.register("csl")
class CSL(Method):
    Params = CSLParams
    variants = {"no_tmp": {"tmp": False}, "threshold_selection": {"selection": "threshold"},
                "partner_fill": {"tmp_fill": "partner"}, "released": {"tmp": False, "compat_bn_restore": True}}

    def views(self) -> Views:
        p = self.params
        alternative = TrustedMaskView(prob=p.tmp_prob, block_size=p.tmp_block_size, cover_ratio=p.tmp_cover_ratio,
                                      blur_sigma=tuple(p.tmp_blur_sigma)) if p.tmp else None
        return Views(unlabeled=True, strong=2, box=UniMatchBox(), alternative=alternative)

    def training_step(self, batch, ctx):
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        x_l, y_l = labeled["image"], labeled["mask"]
        x_w, valid, boxes, x_s = unlabeled["image_w"], unlabeled["valid"], unlabeled["box"], unlabeled["image_s"]
        n_l, rule = len(x_l), self.params.partner

        clean, perturbed = self.model(torch.cat([x_l, x_w]), perturb=append_dropped_copy).chunk(2)
        z_l, z_w, z_fp = clean[:n_l], clean[n_l:], perturbed[n_l:]
        pseudo, weight = select_pseudo_labels(z_w, valid, self.params)

        targets = [tuple(mix(t, boxes[:, k], rule=rule) for t in (pseudo, weight, valid)) for k in range(2)]
        x_s1 = mix(x_s[:, 0], boxes[:, 0], rule=rule)
        x_s2 = mix(x_s[:, 1], boxes[:, 1], rule=rule)  # a TMP view has an empty box: x_s2 is its own
        hidden = torch.zeros((), device=x_w.device)
        if self.params.tmp:
            x_s2, targets[1], hidden = self.trusted_mask(x_s2, targets[1], unlabeled["cover"], rule)

        with frozen_norm_statistics(self.model) if self.params.compat_bn_restore else contextlib.nullcontext():
            z_s1, z_s2 = self.model(torch.cat([x_s1, x_s2])).chunk(2)
        loss_s1 = masked_ce(z_s1, *targets[0])
        loss_s2 = masked_ce(z_s2, *targets[1])
        loss_fp = masked_ce(z_fp, pseudo, weight, valid)
        loss_x = self.supervised_loss(z_l, y_l)
        loss = (loss_x + loss_s1 * 0.25 + loss_s2 * 0.25 + loss_fp * 0.5) / 2
        return loss, {"loss_x": loss_x.detach(), "loss_s1": loss_s1.detach(), "loss_s2": loss_s2.detach(),
                      "loss_fp": loss_fp.detach(), "mask_ratio": reliable_ratio(weight, valid),
                      "hidden_ratio": hidden}

    def trusted_mask(self, x_s2, targets, cover, rule):
        """TMP: hide R = K ∧ (w = 1) ∧ v of the second strong view (K = 0 where the view is a standard one)."""
        pseudo, weight, valid = targets
        region = trusted_region(cover.bool(), weight >= 1, valid)
        partner = None
        if self.params.tmp_fill == "partner":
            partner = (partner_of(x_s2, rule), tuple(partner_of(t, rule) for t in targets))
        x_s2, new_targets = apply_trusted_mask(x_s2, region, self.params.tmp_fill,
                                               partner_x=partner[0] if partner else None, targets=targets,
                                               partner_targets=partner[1] if partner else None)
        share = region.float().sum() / valid.float().sum().clamp_min(1)
        return x_s2, tuple(new_targets), share.detach()


    @torch.no_grad()
    def explain(self, batch, ctx):
        """For the first unlabeled sample: the weak view, ŷ, the maximum confidence, CSL's weights and their
        bands, the image's (confidence, dispersion) points by cluster with the reliable cluster's mean as the
        boundary (w = 1 right of the vertical or below the horizontal line), and, when the sample's second
        strong view is a TMP view, that view with its trusted region hidden."""
        unlabeled = batch["unlabeled"]
        x_w, valid = unlabeled["image_w"], unlabeled["valid"]
        with keep_norm_statistics(self):
            logits = self.model(x_w)
        probs = logits.float().softmax(dim=1)
        chosen = csl_weights(probs, valid, alpha=self.params.csl_alpha, g_alpha=self.params.csl_g_alpha,
                             select=self.params.csl_select, select_lambda=self.params.csl_select_lambda)
        weight, ok = chosen.weights[0], valid[0].bool()
        bands = torch.where(weight >= 1, 0, torch.where(weight >= 0.01, 1, 2))
        bands = torch.where(ok, bands, torch.full_like(bands, 255))
        reliable = int(chosen.reliable_cluster[0])
        cluster = chosen.cluster[0][ok]
        points = torch.stack([chosen.confidence[0][ok], chosen.dispersion[0][ok],
                              (cluster != reliable).float()], dim=1)
        centre = chosen.means[0, reliable]
        panels = [image_panel(x_w[0], "unlabeled image (weak view)"),
                  labels_panel(torch.where(ok, probs[0].argmax(dim=0), torch.full_like(ok, 255, dtype=torch.long)),
                               "pseudo-labels ŷ"),
                  Panel("maximum confidence", "scalar_map", chosen.confidence[0].cpu().numpy(), {"label": "MC"}),
                  Panel(f"CSL weight w (mask ratio {float(chosen.mask_ratio):.2f})", "scalar_map",
                        weight.cpu().numpy(), {"label": "w"}),
                  Panel("weight bands", "mask", bands.cpu().numpy(), {"names": list(WEIGHT_BANDS)}),
                  Panel("(confidence, dispersion) by cluster", "scatter", points.cpu().numpy(),
                        {"names": ["reliable cluster", "other cluster"], "xlabel": "maximum confidence",
                         "ylabel": "residual dispersion s", "vlines": [float(centre[0])],
                         "hlines": [float(centre[1])]})]
        if self.params.tmp and "cover" in unlabeled and bool(unlabeled["cover"][0].any()):
            pseudo = probs.argmax(dim=1)
            targets = (pseudo, chosen.weights, valid)
            x_s2 = mix(unlabeled["image_s"][:, 1], unlabeled["box"][:, 1], rule=self.params.partner)
            hidden, _, share = self.trusted_mask(x_s2, targets, unlabeled["cover"], self.params.partner)
            panels.append(image_panel(hidden[0], f"TMP view, trusted region hidden ({float(share):.0%} of the batch)"))
        return panels
