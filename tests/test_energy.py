"""DUEB's energy terms against hand computations in float64 (docs/methods/dueb.md)."""

import math

import numpy as np
import pytest
import torch

from semiseg.components.energy import free_energy_margin, released_energy


def _hand_logits():
    # B=1, C=3, 2x2 pixels; labels [[0, 2], [1, 255]], the last pixel ignored
    logits = torch.tensor([[[[2.0, 0.0], [1.0, 7.0]],
                            [[0.0, 1.0], [3.0, -2.0]],
                            [[-1.0, 0.5], [0.0, 0.0]]]])
    target = torch.tensor([[[0, 2], [1, 255]]])
    return logits, target


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def test_released_energy_equals_its_formula():
    logits, target = _hand_logits()
    z = logits.double().numpy()[0]
    p = [_softmax(z[:, 0, 0])[0], _softmax(z[:, 0, 1])[2], _softmax(z[:, 1, 0])[1]]
    expected = math.log(sum(math.exp(q) for q in p))
    energy = released_energy(logits, target, None)
    assert energy.dtype == torch.float32 and energy.dim() == 0
    assert math.isclose(energy.item(), expected, rel_tol=1e-6)
    # an invalid pixel leaves Ω like an ignored one
    valid = torch.tensor([[[True, False], [True, True]]])
    expected = math.log(math.exp(p[0]) + math.exp(p[2]))
    assert math.isclose(released_energy(logits, target, valid).item(), expected, rel_tol=1e-6)


def test_released_energy_bounds_and_batch_scope():
    g = torch.Generator().manual_seed(0)
    for scale in (0.1, 1.0, 30.0):
        logits = torch.randn(3, 5, 4, 6, generator=g) * scale
        target = torch.randint(0, 5, (3, 4, 6), generator=g)
        target[0, 0] = 255
        n = int((target != 255).sum())
        energy = released_energy(logits, target, None).item()
        assert math.log(n) - 1e-6 <= energy <= math.log(n) + 1 + 1e-6
    # the extremes: p_y = 1 everywhere gives log|Ω| + 1, p_y = 0 everywhere gives log|Ω|
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    confident = torch.tensor([200.0, 0.0]).view(1, 2, 1, 1).expand(1, 2, 2, 2)
    assert math.isclose(released_energy(confident, target).item(), math.log(4) + 1, rel_tol=1e-6)
    assert math.isclose(released_energy(-confident, target).item(), math.log(4), rel_tol=1e-6)


def test_released_energy_gradient_lowers_the_true_class_probability():
    # binary: p_y = σ(z_y − z_other), so ∂E/∂z_y = ∂E/∂p_y · p_y(1 − p_y),
    # with ∂E/∂p_y = exp(p_y) / Σ_j exp(p_j)
    logits, target = _hand_logits()
    logits = logits[:, :2].clone().requires_grad_()
    target = target.clamp_max(1).masked_fill(target == 255, 255)
    released_energy(logits, target).backward()
    z = logits.detach().double().numpy()[0]
    ys = {(0, 0): 0, (0, 1): 1, (1, 0): 1}
    p = {pix: _softmax(z[:, pix[0], pix[1]])[y] for pix, y in ys.items()}
    total = sum(math.exp(q) for q in p.values())
    for (i, j), y in ys.items():
        dE_dp = math.exp(p[(i, j)]) / total
        assert dE_dp > 0
        expected = dE_dp * p[(i, j)] * (1 - p[(i, j)])
        assert math.isclose(logits.grad[0, y, i, j].item(), expected, rel_tol=1e-5)
        assert logits.grad[0, y, i, j] > 0  # gradient descent on E lowers z_y, hence p_y
    assert logits.grad[0, :, 1, 1].abs().max() == 0  # the ignored pixel
    # one descent step lowers every true-class probability
    with torch.no_grad():
        stepped = logits - 1.0 * logits.grad
    before = logits.detach().softmax(1)
    after = stepped.softmax(1)
    for (i, j), y in ys.items():
        assert after[0, y, i, j] < before[0, y, i, j]


def test_released_energy_drop_exact_zero():
    # pixel 0: p_y underflows to exactly 0.0 in fp32; pixel 1: p_y = 1/2
    logits = torch.tensor([[[[0.0, 0.0]], [[200.0, 0.0]]]])  # B=1, C=2, 1x2
    target = torch.tensor([[[0, 0]]])
    assert logits.softmax(1)[0, 0, 0, 0].item() == 0.0
    kept = released_energy(logits, target).item()
    assert math.isclose(kept, math.log(math.exp(0.0) + math.exp(0.5)), rel_tol=1e-6)
    dropped = released_energy(logits, target, drop_exact_zero=True).item()
    assert math.isclose(dropped, 0.5, rel_tol=1e-6)  # log exp(0.5): only pixel 1 left


def test_energies_on_an_empty_region_give_zero_with_a_graph():
    logits = torch.randn(2, 3, 2, 2, requires_grad=True)
    target = torch.full((2, 2, 2), 255)
    for fn in (released_energy, free_energy_margin):
        logits.grad = None
        loss = fn(logits, target, None)
        assert loss.item() == 0.0 and loss.requires_grad
        loss.backward()
        assert logits.grad.abs().max() == 0
    valid = torch.zeros(2, 2, 2, dtype=torch.bool)
    assert released_energy(logits, torch.zeros(2, 2, 2, dtype=torch.long), valid).item() == 0.0


def test_free_energy_margin_equals_its_formula():
    logits, target = _hand_logits()
    logits = logits * 4 + 20  # free energies ≈ −28, −24.1, −32: on both sides of −25
    z = logits.double().numpy()[0]

    def free_energy(column):  # −logsumexp_c z_c
        top = column.max()
        return -(top + math.log(np.exp(column - top).sum()))

    free = {pix: free_energy(z[:, pix[0], pix[1]]) for pix in [(0, 0), (0, 1), (1, 0)]}
    assert min(free.values()) < -25 < max(free.values())
    hinge = [max(0.0, f + 25.0) ** 2 for f in free.values()]
    expected = 0.1 * sum(hinge) / 3
    loss = free_energy_margin(logits, target, None)  # fp32: F − m_in cancels ~5 digits, hence 1e-5
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert math.isclose(loss.item(), expected, rel_tol=1e-5)
    custom = free_energy_margin(logits, target, None, margin_in=-5.0, scale=2.0).item()
    assert math.isclose(custom, 2.0 * sum(max(0.0, f + 5.0) ** 2 for f in free.values()) / 3, rel_tol=1e-5)
    # the ignored pixel's logits do not matter; an invalid pixel leaves the mean
    changed = logits.clone()
    changed[0, :, 1, 1] = -1000.0
    assert math.isclose(free_energy_margin(changed, target, None).item(), expected, rel_tol=1e-5)
    valid = torch.tensor([[[True, True], [False, True]]])
    first_two = 0.1 * (hinge[0] + hinge[1]) / 2
    assert math.isclose(free_energy_margin(logits, target, valid).item(), first_two, rel_tol=1e-5)


def test_free_energy_margin_gradient_raises_the_logits_below_the_margin():
    # F − m_in > 0 ⇒ ∂L/∂z_c = −2·scale·(F − m_in)·softmax(z)_c/|Ω| < 0: descent raises the logsumexp
    logits = torch.full((1, 2, 1, 1), -30.0, requires_grad=True)
    free_energy_margin(logits, torch.zeros(1, 1, 1, dtype=torch.long)).backward()
    f = 30.0 - math.log(2)  # F = −logsumexp(−30, −30)
    expected = -2 * 0.1 * (f + 25.0) * 0.5
    assert torch.allclose(logits.grad, torch.full_like(logits, expected), rtol=1e-6)
    # well inside the margin: no gradient
    inside = torch.full((1, 2, 1, 1), 40.0, requires_grad=True)
    free_energy_margin(inside, torch.zeros(1, 1, 1, dtype=torch.long)).backward()
    assert inside.grad.abs().max() == 0


@pytest.mark.parametrize("fn", [released_energy, free_energy_margin])
def test_bf16_logits_are_computed_in_fp32(fn):
    g = torch.Generator().manual_seed(1)
    logits = (torch.randn(2, 4, 3, 3, generator=g) * 20 - 20).bfloat16()
    target = torch.randint(0, 4, (2, 3, 3), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = fn(logits, target, None)
    assert loss.dtype == torch.float32
    assert torch.equal(loss, fn(logits.float(), target, None))


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="target"):
        released_energy(torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="valid"):
        free_energy_margin(torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long), torch.ones(3, 3))
