"""Supervised-only baseline (docs/methods/supervised.md): CE on the labeled crops, nothing else.

L_x is CE, or OHEM on Cityscapes (`supervised_loss: ohem`). It gets the same iteration budget T
and labeled batch as the semi-supervised run it is compared with: the released baselines take far
fewer steps, which inflates the published gains (docs/methods/supervised.md: departures).
"""

from __future__ import annotations

from ..registry import METHODS
from .base import Method


@METHODS.register("supervised")
class Supervised(Method):
    def training_step(self, batch, ctx):
        labeled = batch["labeled"]
        loss = self.supervised_loss(self.model(labeled["image"]), labeled["mask"])
        return loss, {"loss_x": loss.detach()}
