"""DUEB's aleatoric losses against float64 Monte-Carlo references with the same noise (docs/methods/dueb.md)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from semiseg.components.aleatoric import heteroscedastic_ce, released_bayesian_ce

B, C, H, W = 2, 4, 3, 5


def _inputs(seed=0, ignore=True):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, C, H, W, generator=g) * 2.0
    variance = torch.rand(B, 1, H, W, generator=g) * 1.5
    target = torch.randint(0, C, (B, H, W), generator=g)
    valid = torch.ones(B, H, W, dtype=torch.bool)
    if ignore:
        target[0, 0, :2] = 255
        valid[1, 2, :] = False
    return logits, variance, target, valid


def _noise(seed, samples, shape=(B, C, H, W)):
    """The documented order: ε_t = torch.randn(shape, generator) for t = 0 … T−1."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g).double().numpy() for _ in range(samples)]


def _log_softmax(x):  # numpy, over axis 1
    top = x.max(axis=1, keepdims=True)
    return x - top - np.log(np.exp(x - top).sum(axis=1, keepdims=True))


def _true_class(x, y):  # (B, C, H, W), (B, H, W) -> (B, H, W)
    return np.take_along_axis(x, y[:, None], axis=1)[:, 0]


def _region(target, valid):
    mask = target.numpy() != 255
    return mask & valid.numpy() if valid is not None else mask


def _kg_reference(logits, variance, target, valid, noise):
    z, var = logits.double().numpy(), variance.double().numpy()
    mask = _region(target, valid)
    y = np.where(mask, target.numpy(), 0)
    a = np.stack([_true_class(_log_softmax(z + np.sqrt(var + 1e-6) * eps), y) for eps in noise])  # (T, B, H, W)
    top = a.max(axis=0)
    lse = top + np.log(np.exp(a - top).sum(axis=0))
    per_pixel = math.log(len(noise)) - lse
    return (per_pixel * mask).sum() / max(mask.sum(), 1)


def _released_reference(logits, variance, target, valid, noise):
    z, var = logits.double().numpy(), variance.double().numpy()
    mask = _region(target, valid)
    y = np.where(mask, target.numpy(), 0)
    count = max(mask.sum(), 1)

    def mean_ce(x):
        return -(_true_class(_log_softmax(x), y) * mask).sum() / count

    loss0 = mean_ce(z)
    m = []
    for eps in noise:
        diff = loss0 - mean_ce(z + np.sqrt(var) * eps)
        m.append(-(diff if diff > 0 else math.expm1(diff)))  # −ELU(diff)
    return loss0 * (1 + np.mean(m)) + np.expm1(var).sum() / var.size


def _kg_torch64(logits, variance, target, valid, noise):
    """Float64 autograd form of A_KG with the same noise, for the gradients."""
    mask = torch.from_numpy(_region(target, valid))
    y = torch.where(mask, target, torch.zeros_like(target)).unsqueeze(1)
    std = (variance + 1e-6).sqrt()
    a = torch.stack([torch.log_softmax(logits + std * torch.from_numpy(eps), 1).gather(1, y)[:, 0] for eps in noise])
    per_pixel = math.log(len(noise)) - torch.logsumexp(a, 0)
    return (per_pixel * mask).sum() / mask.sum().clamp_min(1)


@pytest.mark.parametrize("samples", [1, 3, 10])
def test_heteroscedastic_ce_matches_float64_reference(samples):
    logits, variance, target, valid = _inputs()
    loss = heteroscedastic_ce(logits, variance, target, valid, samples, torch.Generator().manual_seed(7))
    assert loss.dtype == torch.float32 and loss.dim() == 0
    expected = _kg_reference(logits, variance, target, valid, _noise(7, samples))
    assert math.isclose(loss.item(), expected, rel_tol=1e-5)


def test_heteroscedastic_ce_gradients_match_float64_autograd():
    logits, variance, target, valid = _inputs(1)
    z, v = logits.clone().requires_grad_(), variance.clone().requires_grad_()
    heteroscedastic_ce(z, v, target, valid, 6, torch.Generator().manual_seed(3)).backward()
    z64, v64 = logits.double().requires_grad_(), variance.double().requires_grad_()
    _kg_torch64(z64, v64, target, valid, _noise(3, 6)).backward()
    assert torch.allclose(z.grad.double(), z64.grad, rtol=1e-4, atol=1e-7)
    assert torch.allclose(v.grad.double(), v64.grad, rtol=1e-4, atol=1e-7)
    assert v.grad.abs().sum() > 0  # reparameterised: the gradient reaches σ²


def test_backward_redraws_the_forward_noise_whatever_happens_to_the_generator():
    logits, variance, target, valid = _inputs(2)
    grads = []
    for disturb in (False, True):
        z, v = logits.clone().requires_grad_(), variance.clone().requires_grad_()
        gen = torch.Generator().manual_seed(5)
        loss = heteroscedastic_ce(z, v, target, valid, 4, gen)
        if disturb:
            torch.randn(100, generator=gen)
            gen.manual_seed(123)
        loss.backward()
        grads.append((z.grad, v.grad))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])


def test_generator_advances_by_exactly_t_draws_and_default_generator_is_used():
    logits, variance, target, valid = _inputs(3)
    gen = torch.Generator().manual_seed(11)
    heteroscedastic_ce(logits, variance, target, valid, 3, gen)
    ref = torch.Generator().manual_seed(11)
    for _ in range(3):
        torch.randn((B, C, H, W), generator=ref)
    assert torch.equal(torch.randn(4, generator=gen), torch.randn(4, generator=ref))
    # generator=None: the CPU default generator, same order
    torch.manual_seed(13)
    loss = heteroscedastic_ce(logits, variance, target, valid, 3)
    expected = _kg_reference(logits, variance, target, valid, _noise(13, 3))
    assert math.isclose(loss.item(), expected, rel_tol=1e-5)


def test_zero_variance_gives_plain_ce():
    logits, _, target, valid = _inputs(4)
    zero = torch.zeros(B, 1, H, W)
    masked = torch.where(valid, target, torch.full_like(target, 255))
    ce = F.cross_entropy(logits, masked, ignore_index=255).item()
    kg = heteroscedastic_ce(logits, zero, target, valid, 10, torch.Generator().manual_seed(0)).item()
    assert math.isclose(kg, ce, rel_tol=1e-2)  # σ = 1e-3 from the 1e-6 in the square root
    rel = released_bayesian_ce(logits, zero, target, valid, 10, torch.Generator().manual_seed(0)).item()
    assert math.isclose(rel, ce, rel_tol=1e-6)  # no noise at all, and exp(0) − 1 = 0


def test_ignored_and_invalid_pixels_contribute_nothing():
    logits, variance, target, valid = _inputs(5)
    gen_seed = 9
    base = heteroscedastic_ce(logits, variance, target, valid, 5, torch.Generator().manual_seed(gen_seed))
    # changing the logits / variance of excluded pixels changes neither the value nor other gradients
    excluded = (target == 255) | ~valid
    z = torch.where(excluded.unsqueeze(1), torch.full_like(logits, 30.0), logits).requires_grad_()
    v = torch.where(excluded.unsqueeze(1), torch.full_like(variance, 9.0), variance).requires_grad_()
    for fn in (heteroscedastic_ce, released_bayesian_ce):
        z.grad = v.grad = None
        loss = fn(z, v, target, valid, 5, torch.Generator().manual_seed(gen_seed))
        loss.backward()
        assert z.grad[excluded.unsqueeze(1).expand_as(z)].abs().max() == 0
        if fn is heteroscedastic_ce:
            assert math.isclose(loss.item(), base.item(), rel_tol=1e-6)
            assert v.grad[excluded.unsqueeze(1)].abs().max() == 0
    # valid=None is "every pixel valid"
    only_ignore = heteroscedastic_ce(logits, variance, target, None, 5, torch.Generator().manual_seed(1))
    expected = _kg_reference(logits, variance, target, None, _noise(1, 5))
    assert math.isclose(only_ignore.item(), expected, rel_tol=1e-5)


def test_empty_region_gives_zero_with_a_graph():
    logits, variance, target, _ = _inputs(6)
    z, v = logits.clone().requires_grad_(), variance.clone().requires_grad_()
    loss = heteroscedastic_ce(z, v, torch.full_like(target, 255), None, 3)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert z.grad.abs().max() == 0 and v.grad.abs().max() == 0


@pytest.mark.parametrize("samples", [1, 4, 10])
def test_released_matches_float64_reference(samples):
    logits, variance, target, valid = _inputs(7)
    loss = released_bayesian_ce(logits, variance, target, valid, samples, torch.Generator().manual_seed(2))
    assert loss.dtype == torch.float32 and loss.dim() == 0
    expected = _released_reference(logits, variance, target, valid, _noise(2, samples))
    assert math.isclose(loss.item(), expected, rel_tol=1e-5)


def test_released_variance_gradient_is_only_the_depressor():
    logits, variance, target, valid = _inputs(8)
    z, v = logits.clone().requires_grad_(), variance.clone().requires_grad_()
    released_bayesian_ce(z, v, target, valid, 10, torch.Generator().manual_seed(4)).backward()
    assert torch.allclose(v.grad, variance.exp() / variance.numel(), rtol=1e-6, atol=0)
    # z's gradient: L0 and every L_t, with the noise held fixed (float64 autograd with the same noise)
    noise = _noise(4, 10)
    z64 = logits.double().requires_grad_()
    mask = torch.from_numpy(_region(target, valid)).double()
    y = torch.where(mask.bool(), target, torch.zeros_like(target))
    count = mask.sum()

    def mean_ce(x):
        return (F.cross_entropy(x, y, reduction="none") * mask).sum() / count

    loss0 = mean_ce(z64)
    std = variance.double().sqrt()
    m = torch.stack([-F.elu(loss0 - mean_ce(z64 + std * torch.from_numpy(eps))) for eps in noise])
    (loss0 * (1 + m.mean())).backward()
    assert torch.allclose(z.grad.double(), z64.grad, rtol=1e-4, atol=1e-7)


def test_bf16_inputs_are_computed_in_fp32():
    logits, variance, target, valid = _inputs(9)
    z, v = logits.bfloat16().requires_grad_(), variance.bfloat16().requires_grad_()
    for fn, ref in ((heteroscedastic_ce, _kg_reference), (released_bayesian_ce, _released_reference)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = fn(z, v, target, valid, 4, torch.Generator().manual_seed(6))
        assert loss.dtype == torch.float32
        expected = ref(z.detach().float(), v.detach().float(), target, valid, _noise(6, 4))
        assert math.isclose(loss.item(), expected, rel_tol=1e-5)
        loss.backward()
        assert z.grad.dtype == torch.bfloat16 and v.grad.dtype == torch.bfloat16


def test_channels_last_logits_get_the_same_noise():
    logits, variance, target, valid = _inputs(10)
    a = heteroscedastic_ce(logits, variance, target, valid, 3, torch.Generator().manual_seed(8))
    b = heteroscedastic_ce(logits.contiguous(memory_format=torch.channels_last), variance, target, valid, 3,
                           torch.Generator().manual_seed(8))
    assert math.isclose(a.item(), b.item(), rel_tol=1e-6)


def test_bad_shapes_are_rejected():
    logits, variance, target, valid = _inputs()
    with pytest.raises(ValueError, match="variance"):
        heteroscedastic_ce(logits, variance.squeeze(1), target, valid)
    with pytest.raises(ValueError, match="samples"):
        released_bayesian_ce(logits, variance, target, valid, samples=0)


def _peak_bytes(fn):
    """Peak of the live CPU tensor bytes allocated while `fn` runs (the profiler's allocation events)."""
    profiler = torch.profiler
    with profiler.profile(activities=[profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    try:
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        events.sort(key=lambda e: e.start_ns())
        sizes = [e.nbytes() for e in events]
    except AttributeError:  # private profiler API changed
        pytest.skip("profiler memory events not available")
    if not sizes:
        pytest.skip("profiler recorded no memory events")
    return max(np.cumsum(sizes))


@pytest.mark.parametrize("fn", [heteroscedastic_ce, released_bayesian_ce])
def test_peak_memory_does_not_grow_with_the_number_of_samples(fn):
    b, c, h, w = 1, 16, 24, 24
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(b, c, h, w, generator=g, requires_grad=True)
    variance = torch.rand(b, 1, h, w, generator=g, requires_grad=True)
    target = torch.randint(0, c, (b, h, w), generator=g)
    peaks = {}
    for samples in (2, 12):
        logits.grad = variance.grad = None
        peaks[samples] = _peak_bytes(lambda: fn(logits, variance, target, None, samples).backward())
    one_copy = logits.numel() * 4
    # streaming: the peak is the same for 2 and 12 samples (allowing a few per-sample scalars),
    # whereas 12 stored copies of B×C×H×W would add ≥ 10 copies
    assert peaks[12] - peaks[2] < one_copy / 4, (peaks, one_copy)
