"""Panels: what `Method.explain(batch, ctx)` returns, one picture each (docs/method_interface.md: Pictures).

A `Panel` is a title, a kind and a numpy array; `semiseg.engine.batch_picture.render_panels` draws a
list of them as one PNG. The kinds and their data:

| kind | data | extras |
| --- | --- | --- |
| `image` | (H, W, 3) float in [0, 1] | |
| `labels` | (H, W) int class ids, 255 = ignore | |
| `scalar_map` | (H, W) float | `threshold` (drawn as a contour and on the colour bar), `label` (colour bar) |
| `mask` | (H, W) int, value k = category k, 255 = not shown | `names` (one per category), `colours` (RGB) |
| `bars` | (N,) numbers | `labels` (N tick labels), `class_indices` (labels are class ids, named), `ylabel` |
| `scatter` | (N, 3): x, y, category | `names`, `colours` (per category), `xlabel`, `ylabel`, `vlines`, `hlines` (reference lines) |

The helpers turn the tensors of a batch into panel data (first sample, on the CPU), and
`keep_norm_statistics` lets an `explain` run train-mode forwards without moving BatchNorm statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict

import numpy as np
import torch

from ..data.normalize import denormalize

PANEL_KINDS = ("image", "labels", "scalar_map", "mask", "bars", "scatter")


@dataclass
class Panel:
    """One picture of an explanation: `title`, `kind` (one of PANEL_KINDS), `data` (numpy), `extras` (per kind)."""

    title: str
    kind: str
    data: np.ndarray
    extras: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in PANEL_KINDS:
            raise ValueError(f"Panel {self.title!r}: kind must be one of {PANEL_KINDS}, got {self.kind!r}")
        self.data = np.asarray(self.data)
        dims = {"image": 3, "labels": 2, "scalar_map": 2, "mask": 2, "bars": 1, "scatter": 2}[self.kind]
        if self.data.ndim != dims:
            raise ValueError(f"Panel {self.title!r}: a {self.kind} panel needs {dims}-D data, got shape "
                             f"{self.data.shape}")


def image_panel(image: torch.Tensor, title: str) -> Panel:
    """An ImageNet-normalised (3, H, W) image as an `image` panel (denormalised, clipped to [0, 1])."""
    rgb = denormalize(image.detach().float().cpu()).clamp(0, 1)
    return Panel(title, "image", rgb.permute(1, 2, 0).contiguous().numpy())


def labels_panel(labels: torch.Tensor, title: str) -> Panel:
    """A (H, W) map of class ids (255 = ignore) as a `labels` panel."""
    return Panel(title, "labels", labels.detach().cpu().to(torch.int64).numpy())

