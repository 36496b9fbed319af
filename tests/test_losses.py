"""Losses against hand computations (the objectives of docs/methods/*.md)."""

import math

import torch

from semiseg.components.losses import masked_ce, supervised_ce
from semiseg.components.selection import pseudo_labels, select_by_threshold


def test_masked_ce_normalises_by_all_valid_pixels():
    # two pixels, 2 classes; logits chosen so CE is known: uniform logits -> CE = log 2
    logits = torch.zeros(1, 2, 1, 2)
    target = torch.tensor([[[0, 1]]])
    weight = torch.tensor([[[1.0, 0.0]]])  # only the first pixel selected
    valid = torch.tensor([[[True, True]]])
    # Σ m·v·CE / Σ v = log2 / 2 (not log2: the unselected pixel still counts in the denominator)
    assert math.isclose(masked_ce(logits, target, weight, valid).item(), math.log(2) / 2, rel_tol=1e-6)
    # padding (v = 0) leaves both numerator and denominator
    valid = torch.tensor([[[True, False]]])
    assert math.isclose(masked_ce(logits, target, torch.ones(1, 1, 2), valid).item(), math.log(2), rel_tol=1e-6)
    # nothing valid: 0, not NaN
    assert masked_ce(logits, target, weight, torch.zeros(1, 1, 2, dtype=torch.bool)).item() == 0.0


def test_supervised_ce_ignores_255():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 5.0]]]])  # 1x2x1x2
    target = torch.tensor([[[0, 255]]])
    expected = -torch.log_softmax(torch.tensor([2.0, 0.0]), 0)[0]
    assert torch.isclose(supervised_ce(logits, target), expected)


def test_pseudo_labels_and_threshold():
    logits = torch.tensor([[[[3.0]], [[0.0]]], [[[0.0]], [[0.1]]]])  # B=2, C=2, 1x1
    label, conf = pseudo_labels(logits)
    assert label.flatten().tolist() == [0, 1]
    assert math.isclose(conf[0].item(), 1 / (1 + math.exp(-3)), rel_tol=1e-6)
    assert select_by_threshold(conf, 0.9).flatten().tolist() == [1.0, 0.0]
    assert not label.requires_grad
