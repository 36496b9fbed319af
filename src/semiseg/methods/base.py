"""The method interface (architecture.md): one file per method implements it.

A method owns its networks and exposes:
- `training_step(batch, progress) -> (loss, logs)`: `batch["labeled"]` holds
  `image`/`mask`; `batch["unlabeled"]` (when `num_strong_views` is not None)
  holds `image_w`, `image_s` (k strong views), `box` (one CutMix box per
  strong view) and `valid`; `progress` = t/T in [0, 1].
- `after_step()`: EMA updates, queue maintenance (after the optimiser step).
- `param_groups(lr, lr_multi)`: backbone vs head learning rates.
- `predict(images) -> logits`: what evaluation uses.
- `networks()`: every segmentation network it holds (student, teacher, second
  branch) by attribute name, so that `semiseg eval --network NAME` can score
  one that `predict` does not use.
- `state_dict()/load_state_dict()`: nn.Module's, which covers teachers and
  registered buffers (queues).
The engine never branches on a method's name: it only reads these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict, Optional

import torch
from torch import nn

from ..components.cutmix import PARTNER_RULES
from ..components.losses import ohem_ce, supervised_ce
from ..errors import SemisegError


SUPERVISED_LOSSES = ("ce", "ohem")


@dataclass
class MethodParams:
    """Parameters every method accepts (each method extends this).

    The supervised loss L_x (methods.md §0.7): `ce` (Pascal, COCO, ADE20K) or `ohem` (Cityscapes:
    threshold 0.7 and K = min_kept_per_image · B per call; UniMatch / V2 100,000, CPS family 50,000).
    """

    supervised_loss: str = "ce"
    ohem_threshold: float = 0.7
    ohem_min_kept_per_image: int = 100_000


class Method(nn.Module):
    Params: ClassVar[type] = MethodParams
    # None: the method uses no unlabeled data; k >= 0: unlabeled weak view plus k strong views.
    num_strong_views: ClassVar[Optional[int]] = None

    def __init__(self, model: nn.Module, params: MethodParams):
        super().__init__()
        if params.supervised_loss not in SUPERVISED_LOSSES:
            raise SemisegError(f"invalid value for 'method.supervised_loss': '{params.supervised_loss}'; "
                               f"choose one of {', '.join(SUPERVISED_LOSSES)}")
        partner = getattr(params, "partner", "roll")
        if partner not in PARTNER_RULES:
            raise SemisegError(f"invalid value for 'method.partner': '{partner}'; "
                               f"choose one of {', '.join(PARTNER_RULES)}")
        self.model = model
        self.params = params

    def supervised_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """L_x on labeled logits: CE over non-ignored pixels, or OHEM with K per image times the batch."""
        if self.params.supervised_loss == "ohem":
            return ohem_ce(logits, target, self.params.ohem_threshold,
                           self.params.ohem_min_kept_per_image * logits.shape[0])
        return supervised_ce(logits, target)

    def training_step(self, batch: dict, progress: float) -> tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        raise NotImplementedError

    def after_step(self) -> None:
        """Called after each optimiser step."""

    def param_groups(self, lr: float, lr_multi: float) -> list[dict]:
        """Encoder at lr, everything else (decoder, extra heads) at lr·lr_multi (§0.9)."""
        return param_groups_of(self.model, lr, lr_multi)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

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

    def trainable_modules(self) -> list[nn.Module]:
        """The networks the optimiser updates (teachers are excluded)."""
        return [self.model]


def param_groups_of(model: nn.Module, lr: float, lr_multi: float) -> list[dict]:
    backbone = list(model.backbone_parameters())
    ids = {id(p) for p in backbone}
    head = [p for p in model.parameters() if id(p) not in ids]
    return [
        {"params": [p for p in backbone if p.requires_grad], "lr": lr, "base_lr": lr, "name": "backbone"},
        {"params": [p for p in head if p.requires_grad], "lr": lr * lr_multi, "base_lr": lr * lr_multi, "name": "head"},
    ]
