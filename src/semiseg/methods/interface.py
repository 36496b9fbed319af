"""The values a method and the engine exchange (docs/method_interface.md).

- `StepContext`: where the step is (t, T, iterations per epoch-equivalent); what schedules read.
- `Views`: what the method's batch holds: the weak pipeline, the strong views, the CutMix box
  generator and an optional alternative view that may replace one strong view. The engine hands
  these to the data pipeline; `data/` never names a method.
- `Update`: one optimiser, the modules it steps, the loss that drives it, its learning-rate
  schedule. A method returns them in the order they run within a step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from semiseg.data.views import AlternativeView, StrongReplacement  # noqa: F401  (re-exported)

SCHEDULES = ("poly", "constant")


@dataclass(frozen=True)
class StepContext:
    """Optimiser step t (0-based) of T; `iters_per_epoch` = I of docs/method_interface.md (≥ 1)."""

    step: int
    total: int
    iters_per_epoch: int = 1

    @classmethod
    def at(cls, progress: float, total: int = 1000, iters_per_epoch: int = 100) -> "StepContext":
        """The context of the step at `progress` (t/T) of a `total`-step run: for tests and notebooks."""
        return cls(round(progress * total), total, iters_per_epoch)

    @property
    def progress(self) -> float:
        """t / T in [0, 1)."""
        return self.step / self.total

    @property
    def epoch(self) -> int:
        """The epoch-equivalent the step belongs to: ⌊t / I⌋."""
        return self.step // self.iters_per_epoch


BoxGenerator = Callable[[int, int], torch.Tensor]


@dataclass(frozen=True)
class Views:
    """What a method's batch holds besides the labeled weak view.

    unlabeled: an unlabeled stream at all (`batch["unlabeled"]`: `image_w`, `valid`, `index`).
    weak_pipeline: the method's default weak pipeline for both streams (`data.weak_pipeline` overrides it).
    strong: strong photometric copies of the unlabeled weak crop (`image_s`, B x strong x 3 x S x S).
    box: the CutMix box generator (`components/cutmix.py`) or None; with one, `box` holds `num_boxes`
      masks per sample (B x num_boxes x S x S).
    boxes: how many; default one per strong view, or one when there is no strong view.
    alternative: an `AlternativeView` or None: a small picklable callable, called per sample with the uint8
      weak crop (3 x S x S) from torch's RNG, that returns None (keep the standard strong view and box
      `alternative_index`) or a `StrongReplacement(image, box, cover)` that replaces them. With one, the
      batch holds `cover` (B x S x S bool; all False for a sample that kept its standard view).
    alternative_index: which strong view (and box) the alternative may replace; default the second.
    """

    unlabeled: bool = False
    weak_pipeline: str = "unimatch"
    strong: int = 0
    box: Optional[BoxGenerator] = None
    boxes: Optional[int] = None
    alternative: Optional[AlternativeView] = None
    alternative_index: int = 1

    def __post_init__(self):
        if self.strong < 0 or (self.boxes is not None and self.boxes < 0):
            raise ValueError(f"Views: strong and boxes must be >= 0, got {self.strong}, {self.boxes}")
        if not self.unlabeled and (self.strong or self.box is not None):
            raise ValueError("Views: strong views and boxes are made of unlabeled images; set unlabeled=True")
        if self.alternative is not None:
            k = self.alternative_index
            if k < 0:
                raise ValueError(f"Views: alternative_index must be >= 0, got {k}")
            if self.strong < k + 1:
                raise ValueError(f"Views: the alternative view replaces strong view {k}; it needs strong >= {k + 1}, "
                                 f"got {self.strong}")
            if self.box is None or self.num_boxes < k + 1:
                raise ValueError(f"Views: the alternative view replaces box {k} too; it needs a box generator and "
                                 f"at least {k + 1} boxes, got {self.num_boxes}")

    @property
    def num_boxes(self) -> int:
        if self.box is None:
            return 0
        return self.boxes if self.boxes is not None else max(self.strong, 1)


LossFn = Callable[[dict, StepContext], Tuple[torch.Tensor, Dict[str, torch.Tensor]]]


@dataclass
class Update:
    """One optimiser and its place in the step.

    name: how logs and checkpoints call it (`model`, `discriminator`, ...).
    optimizer: built by the method over parameters of `modules` only.
    modules: the modules whose gradients `optimizer` steps; under torchrun their gradients are all-reduced.
    loss: `loss(batch, ctx) -> (loss, logs)`, the forward whose backward fills those gradients.
    schedule: `poly` (lr_t = lr_0·(1 − t/T)^p from each group's initial lr) or `constant`.
    """

    name: str
    optimizer: torch.optim.Optimizer
    modules: Sequence[nn.Module]
    loss: LossFn
    schedule: str = "poly"

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"Update {self.name!r}: schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        self.modules = list(self.modules)


def check_updates(method: nn.Module, updates: Sequence[Update]) -> None:
    """Every trainable parameter of `method` is stepped by exactly one update, and only from its modules.

    Raises ValueError naming the parameter otherwise (a method author's mistake, not a user's).
    """
    if not updates:
        raise ValueError(f"{type(method).__name__}.updates() returned no update")
    names = [u.name for u in updates]
    if len(set(names)) != len(names):
        raise ValueError(f"{type(method).__name__}: update names must be unique, got {names}")
    own_modules = {id(m) for m in method.modules()}
    for update in updates:
        stray = [m for m in update.modules if id(m) not in own_modules]
        if stray:
            raise ValueError(f"update '{update.name}' steps a {type(stray[0]).__name__} that is not an attribute of "
                             "the method (it would be missing from checkpoints)")
    param_names = {id(p): n for n, p in method.named_parameters()}
    owner: Dict[int, str] = {}
    for update in updates:
        in_modules = {id(p) for m in update.modules for p in m.parameters()}
        for group in update.optimizer.param_groups:
            for p in group["params"]:
                name = param_names.get(id(p), "<a parameter outside the method>")
                if id(p) in owner:
                    raise ValueError(f"{name} is stepped by updates '{owner[id(p)]}' and '{update.name}'")
                if id(p) not in in_modules:
                    raise ValueError(f"update '{update.name}' steps {name}, which is not in its modules")
                owner[id(p)] = update.name
    for name, p in method.named_parameters():
        if p.requires_grad and id(p) not in owner:
            raise ValueError(f"trainable parameter {name} is in no update's optimiser (freeze it with "
                             "requires_grad_(False) or add it to an update)")
