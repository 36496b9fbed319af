"""The method interface (docs/method_interface.md): one file per method implements it.

A method owns its networks and declares what it needs; the engine never reads its name.
- `views()`: what the batch holds (`Views`: unlabeled stream, weak pipeline, strong views, CutMix boxes).
- `training_step(batch, ctx) -> (loss, logs)`: the loss of the default update; `ctx` is the
  `StepContext` (t, T, iterations per epoch-equivalent).
- `updates(train_cfg) -> [Update]`: its optimisers in step order. The default is one SGD/AdamW
  (`train.optimizer`) over `param_groups` of the trainable networks, poly schedule, driven by
  `training_step`. A method with a discriminator returns a second `Update` after it.
- `after_step()`: EMA updates, queue maintenance (after every update of the step).
- `predict(images) -> logits`: what evaluation uses; `networks()`: every segmentation network by
  attribute name, for `semiseg eval --network NAME`.
- `state_dict()/load_state_dict()`: nn.Module's: networks, teachers, discriminators and registered
  buffers (queues, counters) are all in `latest.pt`.
- `variants`: named sets of `method.*` values worth testing and documenting besides the defaults.
- `explain(batch, ctx) -> [Panel]`: pictures of what the method does with a batch (`semiseg show`); it
  changes no state. Default: the images, the label map and `predict`'s classes of the first sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict, List, Optional

import torch
from torch import nn

from ..components.cutmix import PARTNER_RULES
from ..components.ema import EMATeacher
from ..components.losses import ohem_ce, supervised_ce
from ..components.optimizers import default_optimizer, merge_groups, param_groups_of
from ..components.csl_selection import SELECT_RULES as CSL_SELECT_RULES
from ..config_checks import check_value, int_at_least, real_above, real_at_least, real_between
from ..errors import SemisegError
from .interface import StepContext, Update, Views
from ..components.norm_statistics import keep_norm_statistics
from .panels import Panel, image_panel, labels_panel

SUPERVISED_LOSSES = ("ce", "ohem")


def check_choice(key: str, value, choices) -> None:
    """One line naming `method.<key>` when `value` is not one of `choices`."""
    if value not in choices:
        raise SemisegError(f"invalid value for 'method.{key}': '{value}'; choose one of {', '.join(map(str, choices))}")


@dataclass
class MethodParams:
    """Parameters every method accepts (each method extends this).

    `choices` (a class attribute, merged along the class hierarchy) lists the keys whose value must be one
    of a fixed set; a wrong value stops with one line naming `method.<key>` and the valid values.
    `ranges` (merged the same way) maps keys to a rule of `semiseg.config_checks` (`real_between(0, 1)`,
    `int_at_least(1)`, ...); a value outside stops with one line naming `method.<key>` and the range.
    """

    choices: ClassVar[Dict[str, tuple]] = {"supervised_loss": SUPERVISED_LOSSES}
    ranges: ClassVar[Dict[str, tuple]] = {"ohem_threshold": real_between(0, 1),
                                          "ohem_min_kept_per_image": int_at_least(1)}

    supervised_loss: str = "ce"  # L_x: ce (Pascal, COCO, ADE20K) | ohem (Cityscapes)
    ohem_threshold: float = 0.7  # OHEM keeps pixels whose true-class probability is at most this (or the K-th)
    ohem_min_kept_per_image: int = 100_000  # OHEM's K per image; K = this x local batch (UniMatch / V2: 100,000)

    def __post_init__(self):
        for cls in reversed(type(self).__mro__):
            for key, allowed in vars(cls).get("choices", {}).items():
                check_choice(key, getattr(self, key), allowed)
            for key, rule in vars(cls).get("ranges", {}).items():
                check_value(f"method.{key}", getattr(self, key), rule)


@dataclass
class CutMixParams(MethodParams):
    """Parameters of every method that mixes unlabeled images with a partner."""

    choices: ClassVar[Dict[str, tuple]] = {"partner": PARTNER_RULES}

    partner: str = "roll"  # CutMix partner: roll = sample (i+1) mod B (our default) | flip = B−1−i (released V2)


@dataclass
class SelectionParams(MethodParams):
    """The pseudo-label selection of a teacher-student method (components/selection.py; docs/methods/csl.md).

    Each method lists the `selection` values it accepts in its own `choices` (its published rule first)."""

    ranges: ClassVar[Dict[str, tuple]] = {"csl_alpha": real_above(0), "csl_g_alpha": real_above(0),
                                          "csl_select_lambda": real_at_least(0)}
    choices: ClassVar[Dict[str, tuple]] = {"csl_select": CSL_SELECT_RULES}

    csl_alpha: float = 2.0  # selection: csl — α of the soft weight exp(−cz²/α)·exp(−rz²/α)
    csl_g_alpha: float = 1.0  # selection: csl — scale of the residual dispersion s = g_alpha·g·RV
    csl_select: str = "mean_conf"  # selection: csl — reliable cluster: mean_conf | linear | neglog
    csl_select_lambda: float = 0.25  # selection: csl — λ of the linear / neglog cluster scores
    csl_compile: bool = False  # selection: csl — run it through torch.compile: a fused pass, compiled once per run


class Method(nn.Module):
    Params: ClassVar[type] = MethodParams
    # named sets of method.* overrides that reproduce a published variant or a released behaviour
    variants: ClassVar[Dict[str, dict]] = {}
    # extra network outputs the method reads; build_method checks the config switches them on
    required_heads: ClassVar[tuple] = ()

    def __init__(self, model: nn.Module, params: MethodParams):
        super().__init__()
        self.model = model
        self.params = params

    # -- what the batch holds -------------------------------------------------------------------
    def views(self) -> Views:
        """Default: labeled images only, UniMatch's weak pipeline."""
        return Views()

    # -- losses -----------------------------------------------------------------------------------
    def supervised_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """L_x on labeled logits: CE over non-ignored pixels, or OHEM with K per image times the batch."""
        if self.params.supervised_loss == "ohem":
            return ohem_ce(logits, target, self.params.ohem_threshold,
                           self.params.ohem_min_kept_per_image * logits.shape[0])
        return supervised_ce(logits, target)

    def training_step(self, batch: dict, ctx: StepContext) -> tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        raise NotImplementedError

    def after_step(self) -> None:
        """Called once per step, after every update's optimiser step."""

    # -- optimisers -------------------------------------------------------------------------------
    def param_groups(self, lr: float, lr_multi: float) -> list[dict]:
        """Encoder at lr, everything else (decoder, extra heads) at lr·lr_multi; joined over the trainable networks."""
        return merge_groups(*(param_groups_of(m, lr, lr_multi) for m in self.trainable_modules()))

    def trainable_modules(self) -> List[nn.Module]:
        """The networks the default update steps (teachers are excluded)."""
        return [self.model]

    def updates(self, train_cfg) -> List[Update]:
        """The optimisers in step order; default: one `train.optimizer` over `param_groups`, poly schedule."""
        optimizer = default_optimizer(self.param_groups(train_cfg.lr, train_cfg.lr_multi), train_cfg)
        return [Update("model", optimizer, self.trainable_modules(), self.training_step, "poly")]

    # -- checkpoints ----------------------------------------------------------------------------
    def upgrade_state(self, state: dict) -> dict:
        """A checkpoint's method state in this version's layout (called before loading it): the EMA teachers
        of semiseg 0.1.0 checkpoints move under `<name>.net` with their counter."""
        for name, child in self.named_children():
            if isinstance(child, EMATeacher):
                state = EMATeacher.upgrade_state(state, name + ".")
        return state

    # -- inference ------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    # -- pictures -------------------------------------------------------------------------------
    @torch.no_grad()
    def explain(self, batch: dict, ctx: StepContext) -> List[Panel]:
        """Panels of what the method does with `batch` at step `ctx` (docs/method_interface.md: Pictures).

        Runs without gradients in whatever mode the caller set, and leaves every state of the method as
        it was (no EMA update, no queue push, no teacher copy; normalisation statistics a train-mode
        forward would move are restored). Default, for the first sample: the labeled image and its label
        map, the unlabeled weak image (if the batch has one), and `predict`'s classes on the unlabeled
        image (or the labeled one). `predict` runs on the whole stream, so train-mode BatchNorm sees a batch.
        """
        labeled, unlabeled = batch["labeled"], batch.get("unlabeled")
        panels = [image_panel(labeled["image"][0], "labeled image"),
                  labels_panel(labeled["mask"][0], "label map")]
        if unlabeled is not None:
            panels.append(image_panel(unlabeled["image_w"][0], "unlabeled image (weak view)"))
            images, which = unlabeled["image_w"], "unlabeled"
        else:
            images, which = labeled["image"], "labeled"
        with keep_norm_statistics(self):
            logits = self.predict(images)
        panels.append(labels_panel(logits[0].argmax(dim=0), f"prediction on the {which} image"))
        return panels

    def networks(self) -> Dict[str, nn.Module]:
        """The segmentation networks this method holds, by attribute name (`model`, `teacher`, `model2`, ...)."""
        return {name: child for name, child in self.named_children() if hasattr(child, "backbone_parameters")}

    def predictor(self, network: Optional[str] = None):
        """What evaluation calls: `predict`, or the forward of the network named `network`."""
        if network is None:
            return self.predict
        nets = self.networks()
        if network not in nets:
            raise SemisegError(f"unknown network '{network}' for method '{type(self).__name__}'; "
                               f"this checkpoint holds: {', '.join(nets)}")
        return nets[network]
