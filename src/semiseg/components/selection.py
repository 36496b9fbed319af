"""Pseudo-labels and their selection from teacher/weak-view predictions."""

from __future__ import annotations

import torch


@torch.no_grad()
def pseudo_labels(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ŷ, q) = (argmax, max) of softmax(sg(z)), in fp32 (docs/distributed.md: mixed precision)."""
    probs = logits.detach().float().softmax(dim=1)
    confidence, label = probs.max(dim=1)
    return label, confidence


def select_by_threshold(confidence: torch.Tensor, threshold: float) -> torch.Tensor:
    """m = 1[q ≥ τ] (FixMatch / UniMatch), as a float mask."""
    return (confidence >= threshold).float()
