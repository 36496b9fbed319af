"""OHEM CE (docs/methods/supervised.md), Mean Teacher's softmax MSE and the sigmoid ramp-up
(docs/methods/mean_teacher.md), by hand."""

import math

import pytest
import torch
import torch.nn.functional as F

from semiseg.components.losses import masked_softmax_mse, ohem_ce
from semiseg.components.ramps import sigmoid_rampup


def _logits_with_true_class_prob(probs):
    """(1, 2, 1, N) logits whose class-0 probability is `probs[i]` at pixel i."""
    p = torch.tensor(probs)
    return torch.stack([torch.log(p), torch.log(1 - p)]).view(1, 2, 1, -1)


def test_ohem_keeps_pixels_below_the_threshold():
    logits = _logits_with_true_class_prob([0.1, 0.5, 0.8, 0.95])
    target = torch.zeros(1, 1, 4, dtype=torch.long)
    # K = 1: the 1st smallest P is 0.1 < 0.7, so τ = 0.7: keep 0.1 and 0.5
    expected = -(math.log(0.1) + math.log(0.5)) / 2
    assert ohem_ce(logits, target, 0.7, 1).item() == pytest.approx(expected, rel=1e-5)


def test_ohem_keeps_at_least_k_hardest():
    logits = _logits_with_true_class_prob([0.1, 0.5, 0.8, 0.95])
    target = torch.zeros(1, 1, 4, dtype=torch.long)
    # K = 3: P_(3) = 0.8 > 0.7, so τ = 0.8: keep 0.1, 0.5, 0.8
    expected = -(math.log(0.1) + math.log(0.5) + math.log(0.8)) / 3
    assert ohem_ce(logits, target, 0.7, 3).item() == pytest.approx(expected, rel=1e-5)


def test_ohem_without_enough_valid_pixels_is_plain_ce_and_ignores_255():
    logits = _logits_with_true_class_prob([0.1, 0.5, 0.8, 0.95])
    target = torch.tensor([[[0, 0, 255, 0]]])
    # N = 3 valid < K = 5: plain CE over the 3 valid pixels
    expected = -(math.log(0.1) + math.log(0.5) + math.log(0.95)) / 3
    assert ohem_ce(logits, target, 0.7, 5).item() == pytest.approx(expected, rel=1e-5)
    assert ohem_ce(logits, target, 0.7, 5).item() == pytest.approx(F.cross_entropy(logits, target, ignore_index=255).item())


def test_ohem_class_weights_weighted_mean_and_gradient_only_through_ce():
    p = [0.1, 0.2, 0.6, 0.99]
    logits = _logits_with_true_class_prob(p).requires_grad_(True)
    target = torch.tensor([[[0, 1, 0, 0]]])  # pixel 1 has true-class prob 0.8 (class 1)
    w = torch.tensor([1.0, 3.0])
    # P = 0.1, 0.8, 0.6, 0.99; K = 2: P_(2) = 0.6 < 0.7 -> τ = 0.7: keep pixels 0 and 2 (weights 1, 1)
    loss = ohem_ce(logits, target, 0.7, 2, class_weight=w)
    assert loss.item() == pytest.approx(-(math.log(0.1) + math.log(0.6)) / 2, rel=1e-5)
    loss.backward()
    assert logits.grad[..., 1].abs().sum() == 0 and logits.grad[..., 3].abs().sum() == 0
    # K = 4 keeps all (τ = P_(4) = 0.99): weighted mean Σ w·CE / Σ w
    ce = [-math.log(0.1), -math.log(0.8), -math.log(0.6), -math.log(0.99)]
    expected = (ce[0] + 3 * ce[1] + ce[2] + ce[3]) / 6
    assert ohem_ce(logits.detach(), target, 0.7, 4, class_weight=w).item() == pytest.approx(expected, rel=1e-5)


def test_ohem_min_kept_is_per_call():
    # K is per call: callers pass K = per-image · B; the same per-image K on a doubled batch keeps twice the pixels
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 8, 8) * 3
    target = torch.randint(0, 3, (1, 8, 8))
    one = ohem_ce(logits, target, 0.0, 10)
    two = ohem_ce(torch.cat([logits, logits]), torch.cat([target, target]), 0.0, 20)
    assert one.item() == pytest.approx(two.item(), rel=1e-5)


def test_softmax_mse_is_the_mean_over_valid_elements_and_detaches_the_teacher():
    student = torch.zeros(1, 2, 1, 2, requires_grad=True)  # p_s = (0.5, 0.5) at both pixels
    teacher = torch.tensor([[[[math.log(3.0), 0.0]], [[0.0, 0.0]]]], requires_grad=True)  # p_t = (0.75, 0.25), (0.5, 0.5)
    valid = torch.tensor([[[True, True]]])
    # Σ over elements: pixel 0: 2·0.25² = 0.125, pixel 1: 0 -> / (C·Σv) = 0.125 / 4
    loss = masked_softmax_mse(student, teacher, valid)
    assert loss.item() == pytest.approx(0.125 / 4)
    loss.backward()
    assert teacher.grad is None and student.grad is not None
    # padding pixel 0 leaves numerator and denominator
    assert masked_softmax_mse(student, teacher, torch.tensor([[[False, True]]])).item() == 0.0


def test_sigmoid_rampup():
    assert sigmoid_rampup(0.0, 0.1) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(0.05, 0.1) == pytest.approx(math.exp(-5 * 0.25))
    assert sigmoid_rampup(0.1, 0.1) == 1.0 and sigmoid_rampup(0.7, 0.1) == 1.0
    assert sigmoid_rampup(0.0, 0.0) == 1.0  # released MT: constant weight
