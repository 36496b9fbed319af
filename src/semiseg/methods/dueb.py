"""DUEB: uncertainty- and energy-based losses on CPCL's two branches (WACV 2025) (docs/methods/dueb.md).

CPCL (methods/cpcl.py) with, on each branch, a per-pixel variance head σ² (one value per pixel, shared by
the classes) and two extra terms applied with the ground truth, the pseudo-intersection labels (branch 1)
and the pseudo-union labels (branch 2):

    A(z, σ², y) = mean_Ω [ log T − logsumexp_t log_softmax(z + √(σ² + 1e-6)·ε_t)[y] ],  ε_t ~ N(0, I), T = 10
    E(z, y)     = log Σ_Ω exp(softmax(z)[y])                         (the released energy term)
    L_sup   = CE(z1_l, y) + CE(z2_l, y) + 0.5·(E(z1_l, y) + E(z2_l, y) + A(z1_l, σ²1_l, y) + A(z2_l, σ²2_l, y))
    L_unsup = λ_u·(L_inter + L_union) + E(z1_m, ŷ∩) + E(z2_m, ŷ∪) + A(z1_m, σ²1_m, ŷ∩) + A(z2_m, σ²2_m, ŷ∪)
    L       = L_sup + L_unsup

`use_energy` / `use_aleatoric` switch the terms off (the released ablations); `aleatoric: released` is the
release's non-reparameterised Bayesian CE with a frozen variance head; `energy: margin` the per-pixel
free-energy margin form. Branch 1 predicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict

import torch

from ..components.aleatoric import heteroscedastic_ce, released_bayesian_ce
from ..components.collaborative_labels import collaborative_labels
from ..components.energy import free_energy_margin, released_energy
from ..components.losses import masked_ce
from ..config_checks import int_at_least, real_at_least
from ..registry import METHODS
from .cpcl import CPCL, CPCLParams

ALEATORIC_FORMS = ("kendall_gal", "released")
ENERGY_FORMS = ("released", "margin")
OUTPUTS = ("logits", "variance")


@dataclass
class DUEBParams(CPCLParams):
    use_aleatoric: bool = True  # the heteroscedastic terms A (false: the release's energy-only ablation)
    use_energy: bool = True  # the energy terms E (false: the release's aleatoric-only ablation)
    aleatoric: str = "kendall_gal"  # kendall_gal (reparameterised, trainable head) | released (frozen head)
    energy: str = "released"  # released: log Σ exp(p_y) | margin: per-pixel free-energy margin
    mc_samples: int = 10  # T, Monte-Carlo samples of the aleatoric loss
    labeled_term_weight: float = 0.5  # weight of E and A on the labeled images, per branch
    unlabeled_term_weight: float = 1.0  # weight of E and A on the mixed unlabeled images, per branch
    energy_margin_in: float = -25.0  # m_in of the margin form
    energy_margin_scale: float = 0.1  # λ of the margin form

    choices: ClassVar[Dict[str, tuple]] = {"aleatoric": ALEATORIC_FORMS, "energy": ENERGY_FORMS}
    ranges: ClassVar[Dict[str, tuple]] = {"mc_samples": int_at_least(1), "labeled_term_weight": real_at_least(0),
                                          "unlabeled_term_weight": real_at_least(0),
                                          "energy_margin_scale": real_at_least(0)}


@METHODS.register("dueb")
class DUEB(CPCL):
    Params = DUEBParams
    required_heads = ("variance",)
    variants = {"aleatoric_only": {"use_energy": False}, "energy_only": {"use_aleatoric": False},
                "released": {"aleatoric": "released"}, "margin_energy": {"energy": "margin"}}

    def __init__(self, model, params: DUEBParams):
        super().__init__(model, params)
        # the release leaves the variance heads out of every optimiser; without A they are not used at all
        if params.aleatoric == "released" or not params.use_aleatoric:
            for net in (self.model, self.model2):
                net.heads["variance"].requires_grad_(False)
        self.outputs = OUTPUTS if params.use_aleatoric else ("logits",)

    def aleatoric_term(self, out, target, valid):
        loss = released_bayesian_ce if self.params.aleatoric == "released" else heteroscedastic_ce
        return loss(out["logits"], out["variance"], target, valid, samples=self.params.mc_samples)

    def energy_term(self, out, target, valid):
        if self.params.energy == "margin":
            return free_energy_margin(out["logits"], target, valid, self.params.energy_margin_in,
                                      self.params.energy_margin_scale)
        return released_energy(out["logits"], target, valid)

    def extra_terms(self, out, target, valid) -> dict:
        """E and A of one branch against `target` (255 = excluded), as switched on."""
        terms = {}
        if self.params.use_energy:
            terms["energy"] = self.energy_term(out, target, valid)
        if self.params.use_aleatoric:
            terms["aleatoric"] = self.aleatoric_term(out, target, valid)
        return terms

    @torch.no_grad()
    def explain(self, batch, ctx):
        """CPCL's panels, plus branch 1's per-pixel variance σ² on the mixed image."""
        panels = super().explain(batch, ctx)
        if self.params.use_aleatoric:
            from ..components.norm_statistics import keep_norm_statistics
            from .panels import Panel

            with keep_norm_statistics(self):
                x_m = self.mixed_pair(batch["unlabeled"])[0]
                variance = self.model(x_m, outputs=("variance",))["variance"]
            panels.append(Panel("branch 1 variance σ²", "scalar_map", variance[0, 0].float().cpu().numpy(),
                                {"label": "σ²"}))
        return panels

    def training_step(self, batch, ctx):
        p = self.params
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        x_l, y_l = labeled["image"], labeled["mask"]
        out1_l, out2_l = self.model(x_l, outputs=self.outputs), self.model2(x_l, outputs=self.outputs)
        loss_x = self.supervised_loss(out1_l["logits"], y_l) + self.supervised_loss(out2_l["logits"], y_l)
        x_m, teacher1, teacher2, valid = self.mixed_pair(unlabeled)
        labels = collaborative_labels(teacher1, teacher2, valid, self.num_classes)
        out1, out2 = self.model(x_m, outputs=self.outputs), self.model2(x_m, outputs=self.outputs)
        loss_inter = masked_ce(out1["logits"], labels.intersection, labels.beta_inter, valid)
        loss_union = masked_ce(out2["logits"], labels.union, labels.beta_union, valid)

        logs, extra = {}, torch.zeros((), device=x_l.device)
        labeled_valid = y_l != 255
        for weight, branch_terms in (
                (p.labeled_term_weight, [self.extra_terms(out1_l, y_l, labeled_valid),
                                         self.extra_terms(out2_l, y_l, labeled_valid)]),
                (p.unlabeled_term_weight, [self.extra_terms(out1, labels.intersection, valid),
                                           self.extra_terms(out2, labels.union, valid)])):
            for terms in branch_terms:
                for name, value in terms.items():
                    extra = extra + weight * value
                    logs[f"loss_{name}"] = logs.get(f"loss_{name}", 0.0) + weight * value.detach()
        loss = loss_x + p.unsup_weight * (loss_inter + loss_union) + extra
        return loss, {"loss_x": loss_x.detach(), "loss_inter": loss_inter.detach(),
                      "loss_union": loss_union.detach(), "overlap": labels.overlap,
                      **({"variance": out1["variance"].detach().float().mean()} if "variance" in out1 else {}), **logs}
