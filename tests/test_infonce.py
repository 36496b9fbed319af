"""InfoNCE and U2PL's per-class contrastive average against hand computations and numpy (docs/methods/u2pl.md)."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from semiseg.components.infonce import class_contrastive_loss, info_nce


def numpy_info_nce(anchors, positive, negatives, temperature):
    """The straightforward definition, one anchor at a time, in float64."""
    anchors, positive, negatives = (np.asarray(x, dtype=np.float64) for x in (anchors, positive, negatives))
    if positive.ndim == 1:
        positive = np.broadcast_to(positive, anchors.shape)

    def cos(u, v):
        return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))

    losses = []
    for a, p, negs in zip(anchors, positive, negatives):
        numerator = math.exp(cos(a, p) / temperature)
        denominator = numerator + sum(math.exp(cos(a, n) / temperature) for n in negs)
        losses.append(-math.log(numerator / denominator))
    return float(np.mean(losses))


def random_inputs(m=6, n=5, d=8, seed=0, positive_per_anchor=True):
    generator = torch.Generator().manual_seed(seed)
    anchors = torch.randn(m, d, generator=generator)
    positive = torch.randn(m, d, generator=generator) if positive_per_anchor else torch.randn(d, generator=generator)
    negatives = torch.randn(m, n, d, generator=generator)
    return anchors, positive, negatives


def test_hand_computation_in_2d():
    # anchor (1,0), positive (1,0), negatives (0,1) and (−1,0), τ = 0.5:
    # cosines 1, 0, −1 -> logits 2, 0, −2;
    # ℓ = −log[e² / (e² + e⁰ + e⁻²)] = log(1 + e⁻² + e⁻⁴) = log(1.1536509…) = 0.1429316…
    anchors = torch.tensor([[1.0, 0.0]])
    positive = torch.tensor([1.0, 0.0])
    negatives = torch.tensor([[[0.0, 1.0], [-1.0, 0.0]]])
    loss = info_nce(anchors, positive, negatives, 0.5)
    assert loss.dim() == 0 and loss.dtype == torch.float32
    assert loss.item() == pytest.approx(0.14293162849989968, rel=1e-6)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2) + math.exp(-4)), rel=1e-6)


@pytest.mark.parametrize("positive_per_anchor", [True, False])
@pytest.mark.parametrize("temperature", [0.5, 0.1, 2.0])
def test_matches_numpy_reference(positive_per_anchor, temperature):
    anchors, positive, negatives = random_inputs(seed=1, positive_per_anchor=positive_per_anchor)
    got = info_nce(anchors, positive, negatives, temperature).item()
    expected = numpy_info_nce(anchors.numpy(), positive.numpy(), negatives.numpy(), temperature)
    assert got == pytest.approx(expected, rel=1e-5)


def test_scale_invariance_of_cosine_features():
    anchors, positive, negatives = random_inputs(seed=2)
    generator = torch.Generator().manual_seed(5)
    scale = lambda x: x * (0.01 + 100 * torch.rand(x.shape[:-1] + (1,), generator=generator))  # noqa: E731
    reference = info_nce(anchors, positive, negatives, 0.5)
    scaled = info_nce(scale(anchors), scale(positive), scale(negatives), 0.5)
    assert torch.allclose(reference, scaled, rtol=1e-5)


def test_gradients_reach_anchors_only_when_targets_are_detached():
    torch.manual_seed(0)
    student, teacher = nn.Linear(4, 8), nn.Linear(4, 8)
    x = torch.randn(6, 4)
    anchors = student(x)
    positive = teacher(x).mean(dim=0).detach()
    negatives = teacher(torch.randn(6 * 3, 4)).reshape(6, 3, 8).detach()
    info_nce(anchors, positive, negatives, 0.5).backward()
    assert student.weight.grad is not None and student.weight.grad.abs().sum() > 0
    assert teacher.weight.grad is None and teacher.bias.grad is None


def test_bf16_inputs_give_the_fp32_result():
    anchors, positive, negatives = random_inputs(m=16, n=10, d=32, seed=3)
    reference = info_nce(anchors, positive, negatives, 0.5)
    low = info_nce(anchors.bfloat16(), positive.bfloat16(), negatives.bfloat16(), 0.5)
    assert low.dtype == torch.float32
    assert abs(low.item() - reference.item()) < 1e-2
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast is disabled inside
        under_autocast = info_nce(anchors, positive, negatives, 0.5)
    assert under_autocast.dtype == torch.float32
    assert torch.allclose(under_autocast, reference, rtol=1e-6)


def test_rejects_bad_temperature_and_shapes():
    anchors, positive, negatives = random_inputs()
    with pytest.raises(ValueError):
        info_nce(anchors, positive, negatives, 0.0)
    with pytest.raises(ValueError):
        info_nce(anchors, positive, negatives[:, 0], 0.5)
    with pytest.raises(ValueError):
        class_contrastive_loss(anchors, positive, negatives, torch.ones(6, dtype=torch.bool),
                               torch.ones(6, dtype=torch.bool))


# --- per-class average -----------------------------------------------------------------------------------------


def class_inputs(k=4, m=5, n=3, d=6, seed=4):
    generator = torch.Generator().manual_seed(seed)
    anchors = torch.randn(k, m, d, generator=generator)
    positives = torch.randn(k, d, generator=generator)
    negatives = torch.randn(k, m, n, d, generator=generator)
    return anchors, positives, negatives


def test_class_average_counts_valid_classes_without_anchors():
    anchors, positives, negatives = class_inputs()
    # class 0, 1: sampled; class 2: valid but no anchors (its rows are garbage, here NaN);
    # class 3: not valid (no candidate).
    anchors[2] = math.nan
    positives[2] = math.nan
    negatives[2] = math.nan
    anchors.requires_grad_(True)
    valid = torch.tensor([True, True, True, False])
    sampled = torch.tensor([True, True, False, True])  # class 3 "sampled" but invalid: ignored
    loss = class_contrastive_loss(anchors, positives, negatives, valid, sampled, temperature=0.5)
    per_class = [info_nce(anchors[c], positives[c], negatives[c], 0.5) for c in (0, 1)]
    expected = (per_class[0] + per_class[1]) / 3  # three valid classes in the denominator
    assert torch.allclose(loss, expected, rtol=1e-6)
    loss.backward()
    assert torch.isfinite(anchors.grad).all()  # the NaN rows give no NaN gradient
    assert anchors.grad[0].abs().sum() > 0 and anchors.grad[1].abs().sum() > 0
    assert anchors.grad[2].abs().sum() == 0 and anchors.grad[3].abs().sum() == 0


def test_class_loss_matches_numpy_per_class_average():
    anchors, positives, negatives = class_inputs(k=3, seed=7)
    valid = torch.tensor([True, True, True])
    sampled = torch.tensor([True, False, True])
    got = class_contrastive_loss(anchors, positives, negatives, valid, sampled, temperature=0.2).item()
    expected = sum(numpy_info_nce(anchors[c].numpy(), positives[c].numpy(), negatives[c].numpy(), 0.2)
                   for c in (0, 2)) / 3
    assert got == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("valid_list", [[True, False, False, False], [False, False, False, False]])
def test_at_most_one_valid_class_gives_zero_that_backpropagates(valid_list):
    anchors, positives, negatives = class_inputs()
    anchors.requires_grad_(True)
    valid = torch.tensor(valid_list)
    loss = class_contrastive_loss(anchors, positives, negatives, valid, valid.clone())
    assert loss.item() == 0.0 and loss.dtype == torch.float32
    assert loss.grad_fn is not None  # connected to the anchors' graph: the caller can always backward
    loss.backward()
    assert torch.equal(anchors.grad, torch.zeros_like(anchors))


def test_zero_without_grad_when_anchors_need_none():
    anchors, positives, negatives = class_inputs()
    valid = torch.tensor([True, False, False, False])
    loss = class_contrastive_loss(anchors, positives, negatives, valid, valid)
    assert loss.item() == 0.0 and not loss.requires_grad


def test_class_loss_bf16_and_autocast():
    anchors, positives, negatives = class_inputs(seed=9)
    valid = torch.tensor([True, True, False, True])
    reference = class_contrastive_loss(anchors, positives, negatives, valid, valid)
    low = class_contrastive_loss(anchors.bfloat16(), positives.bfloat16(), negatives.bfloat16(), valid, valid)
    assert low.dtype == torch.float32 and abs(low.item() - reference.item()) < 1e-2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = class_contrastive_loss(anchors, positives, negatives, valid, valid)
    assert torch.allclose(under_autocast, reference, rtol=1e-6)


def test_rows_of_the_sampled_classes_only_give_the_same_loss():
    """U2PL passes only the sampled classes' rows with num_valid = Σ v_c over all classes."""
    anchors, positives, negatives = class_inputs(seed=4)
    valid = torch.tensor([True, True, True, False])
    sampled = torch.tensor([True, False, True, False])  # class 1 valid but unsampled: counts, adds 0
    full = class_contrastive_loss(anchors, positives, negatives, valid, sampled, temperature=0.3)
    rows = torch.tensor([0, 2])
    every = torch.ones(2, dtype=torch.bool)
    subset = class_contrastive_loss(anchors[rows], positives[rows], negatives[rows], every, every,
                                    temperature=0.3, num_valid=valid.sum())
    assert subset.item() == pytest.approx(full.item(), rel=1e-6)
    expected = sum(numpy_info_nce(anchors[c].numpy(), positives[c].numpy(), negatives[c].numpy(), 0.3)
                   for c in (0, 2)) / 3
    assert subset.item() == pytest.approx(expected, rel=1e-5)
    none = torch.zeros(0, dtype=torch.long)
    grad_anchors = anchors.clone().requires_grad_(True)
    empty = class_contrastive_loss(grad_anchors[none], positives[none], negatives[none], every[:0], every[:0],
                                   num_valid=valid.sum())
    empty.backward()  # no class sampled: a zero that still backpropagates
    assert empty.item() == 0.0 and torch.equal(grad_anchors.grad, torch.zeros_like(anchors))
