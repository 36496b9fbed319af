"""DUEB's aleatoric (heteroscedastic) loss A(z, σ², y) (docs/methods/dueb.md).

Two forms, both over Ω = {i : y_i ≠ 255 and v_i = 1} and T Monte-Carlo samples:

- `heteroscedastic_ce` (default): Kendall & Gal's loss with reparameterised logits
  x̂_t = z + √(σ² + 1e-6)·ε_t and A_KG = mean_Ω [log T − logsumexp_t log_softmax(x̂_t)[y]].
  The gradient reaches both z and σ².
- `released_bayesian_ce` (`dueb.aleatoric: released`): the released port of a Keras loss,
  A_rel = L0·(1 + mean_t m_t) + (1/P)·Σ_i (exp(σ²_i) − 1) with m_t = −ELU(L0 − L_t), where the
  noise ε_t ~ N(0, σ²) is drawn without reparameterisation, so σ² only gets the gradient of the
  "variance depressor" exp(σ²)/P.

Memory: both stream over t, and within a sample over the images of the batch. The forward keeps only
per-pixel values (the running log-sum-exp, or one scalar per sample) and the backward recomputes each
sample's noise from the generator state saved at the forward, so no tensor of T·B·C·H·W elements, and
no per-sample B×C×H×W tensor saved for autograd, ever exists: besides the logits and their gradient,
one B×C×H×W noise draw and a few one-image temporaries. Peak memory does not depend on T.

Noise order (documented so tests and other code can reproduce it): for t = 0 … T−1, ε_t is
`torch.randn((B, C, H, W), generator=g)` (float32, contiguous NCHW, whatever the layout of the
logits), drawn in that order from `generator`, or from the device's default generator when it
is None (CPU, CUDA; other devices use a private generator seeded from the CPU default one).
Each call advances the generator by exactly those T draws; the backward draws from a copy.

Everything is computed in fp32 with autocast off; the result is a 0-d fp32 tensor, 0 (with a
graph) when Ω is empty.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from ..labels import target_region

VARIANCE_EPS = 1e-6  # inside the square root of the default form (docs/methods/dueb.md)


def _check_inputs(logits: torch.Tensor, variance: torch.Tensor, target: torch.Tensor,
                  valid: Optional[torch.Tensor], samples: int) -> None:
    if logits.dim() != 4:
        raise ValueError(f"aleatoric loss: logits must be (B, C, H, W), got {tuple(logits.shape)}")
    b, _, h, w = logits.shape
    if tuple(variance.shape) != (b, 1, h, w):
        raise ValueError(f"aleatoric loss: variance must be (B, 1, H, W) = {(b, 1, h, w)}, got {tuple(variance.shape)}")
    if tuple(target.shape) != (b, h, w):
        raise ValueError(f"aleatoric loss: target must be (B, H, W) = {(b, h, w)}, got {tuple(target.shape)}")
    if valid is not None and tuple(valid.shape) != (b, h, w):
        raise ValueError(f"aleatoric loss: valid must be (B, H, W) = {(b, h, w)}, got {tuple(valid.shape)}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"aleatoric loss: samples must be a positive integer, got {samples!r}")




def _noise_generator(device: torch.device, generator: Optional[torch.Generator]) -> torch.Generator:
    """The generator the noise is drawn from: the given one, else the device's default one."""
    if generator is not None:
        if generator.device.type != device.type:
            raise ValueError(f"aleatoric loss: generator is on {generator.device}, logits on {device}")
        return generator
    if device.type == "cpu":
        return torch.default_generator
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.default_generators[index]
    # other devices: a private generator, seeded from the CPU default one (reproducible under manual_seed)
    seed = int(torch.randint(0, 2**62, (), generator=torch.default_generator))
    return torch.Generator(device=device).manual_seed(seed)


def _generator_copy(device: torch.device, state: torch.Tensor) -> torch.Generator:
    copy = torch.Generator(device=device)
    copy.set_state(state)
    return copy


def _draw_noise(z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """ε_t for every pixel, class and image: one (B, C, H, W) fp32 draw (the documented noise order)."""
    return torch.randn(z.shape, generator=generator, device=z.device, dtype=torch.float32)


def _sample_log_prob(z: torch.Tensor, std: torch.Tensor, y: torch.Tensor, eps: torch.Tensor):
    """One sample on a slice of the batch: returns (e, s, a) with e = exp(x̂ − max) (B'×C×H×W, a new
    buffer the caller may overwrite), s = Σ_c e and a = log_softmax(x̂)[y] (both B'×1×H×W), x̂ = z + std·ε."""
    x = torch.addcmul(z, std, eps)
    x_y = x.gather(1, y)
    top = x.amax(dim=1, keepdim=True)
    e = x.sub_(top).exp_()
    s = e.sum(dim=1, keepdim=True)
    a = x_y - top - s.log()
    return e, s, a


def _images(z: torch.Tensor):
    """Slices of one image each: the temporaries of a sample are one image large, not a batch."""
    return [slice(b, b + 1) for b in range(z.shape[0])]


class _SampledTrueClassLogProb(torch.autograd.Function):
    """a_{t,i} = log_softmax(z_i + std_i·ε_{t,i})[y_i] for t = 0 … T−1, reduced while streaming over t:

    - reduce = "logsumexp": out_i = logsumexp_t a_{t,i}, shape (B, H, W);
    - reduce = "sum": out_t = Σ_i w_i·a_{t,i}, shape (T,).

    The backward redraws ε_t from a copy of the generator state saved before the forward's draws,
    recomputes a_t, and accumulates ∂/∂z and ∂/∂std one sample at a time, using
    ∂a_t/∂x̂_t = onehot(y) − softmax(x̂_t). Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, z, std, y, weight, samples, generator, reduce):
        state = generator.get_state()
        running = None
        per_sample = []
        with torch.no_grad():
            for _ in range(samples):
                eps = _draw_noise(z, generator)
                a = torch.cat([_sample_log_prob(z[i], std[i], y[i], eps[i])[2] for i in _images(z)])
                del eps
                if reduce == "logsumexp":
                    running = a if running is None else torch.logaddexp(running, a)
                else:
                    per_sample.append((a * weight).sum())
        out = running.squeeze(1) if reduce == "logsumexp" else torch.stack(per_sample)
        ctx.save_for_backward(z, std, y, weight, out if reduce == "logsumexp" else None)
        ctx.samples, ctx.state, ctx.reduce = samples, state, reduce
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        z, std, y, weight, out = ctx.saved_tensors
        need_z, need_std = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_z or need_std):
            return None, None, None, None, None, None, None
        generator = _generator_copy(z.device, ctx.state)
        grad_z = torch.zeros_like(z, memory_format=torch.contiguous_format) if need_z else None
        grad_std = torch.zeros_like(std) if need_std else None
        for t in range(ctx.samples):
            eps = _draw_noise(z, generator)
            for i in _images(z):
                e, s, a = _sample_log_prob(z[i], std[i], y[i], eps[i])
                # β_t = ∂(output)/∂a_t · grad_out, per pixel (1, 1, H, W)
                if ctx.reduce == "logsumexp":
                    beta = (a - out[i].unsqueeze(1)).exp() * grad_out[i].unsqueeze(1)
                else:
                    beta = weight[i] * grad_out[t]
                # ∂/∂x̂_t = β·(onehot(y) − softmax(x̂_t)), built in place in e
                g = e.mul_(-beta / s).scatter_add_(1, y[i], beta)
                if need_z:
                    grad_z[i].add_(g)
                if need_std:
                    grad_std[i].add_(g.mul_(eps[i]).sum(dim=1, keepdim=True))
                del e, g
            del eps
        return grad_z, grad_std, None, None, None, None, None


def heteroscedastic_ce(logits: torch.Tensor, variance: torch.Tensor, target: torch.Tensor,
                       valid: Optional[torch.Tensor] = None, samples: int = 10,
                       generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """A_KG = (1/|Ω|)·Σ_{i∈Ω} [log T − logsumexp_t log_softmax(x̂_{i,t})[y_i]] (docs/methods/dueb.md).

    x̂_{i,t} = z_i + √(σ²_i + 1e-6)·ε_{i,t}, ε ~ N(0, I) per pixel, class and sample, reparameterised:
    the gradient reaches `logits` (B, C, H, W) and `variance` (B, 1, H, W), σ² ≥ 0, one per pixel and
    shared by the classes. `target` (B, H, W) uses 255 for ignore; `valid` (B, H, W) marks real
    pixels (None: all). T = `samples`; the noise order is in the module docstring. fp32, streaming
    over t (memory independent of T); 0 with a graph when Ω is empty.
    """
    _check_inputs(logits, variance, target, valid, samples)
    mask = target_region(target, valid)
    y = torch.where(mask, target, torch.zeros_like(target)).long().unsqueeze(1)
    gen = _noise_generator(logits.device, generator)
    with torch.autocast(device_type=logits.device.type, enabled=False):
        z = logits.float()
        std = (variance.float() + VARIANCE_EPS).sqrt()
        lse = _SampledTrueClassLogProb.apply(z, std, y, None, samples, gen, "logsumexp")
        per_pixel = math.log(samples) - lse
        weight = mask.float()
        return (per_pixel * weight).sum() / weight.sum().clamp_min(1.0)


def released_bayesian_ce(logits: torch.Tensor, variance: torch.Tensor, target: torch.Tensor,
                         valid: Optional[torch.Tensor] = None, samples: int = 10,
                         generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """`dueb.aleatoric: released` (docs/methods/dueb.md):

        A_rel = L0·(1 + (1/T)·Σ_t m_t) + (1/P)·Σ_i (exp(σ²_i) − 1),   m_t = −ELU(L0 − L_t)

    L0 = mean CE of z over Ω; L_t = mean CE of z + ε_t over Ω with ε_t = σ·n_t, n_t the t-th standard
    normal draw of the module docstring and σ = √σ² detached: the sample is not reparameterised, so
    the only gradient `variance` receives is the depressor's, exp(σ²_i)/P, with P = B·H·W counting
    every pixel (ignored and invalid ones included). z gets the gradient of L0 and of every L_t.
    0-d fp32; the first term is 0 when Ω is empty (the depressor stays).
    """
    _check_inputs(logits, variance, target, valid, samples)
    mask = target_region(target, valid)
    y = torch.where(mask, target, torch.zeros_like(target)).long()
    gen = _noise_generator(logits.device, generator)
    with torch.autocast(device_type=logits.device.type, enabled=False):
        z = logits.float()
        weight = mask.float()
        count = weight.sum().clamp_min(1.0)
        loss0 = (F.cross_entropy(z, y, reduction="none") * weight).sum() / count
        std = variance.detach().float().sqrt()
        sums = _SampledTrueClassLogProb.apply(z, std, y.unsqueeze(1), weight.unsqueeze(1), samples, gen, "sum")
        loss_t = -sums / count
        m = -F.elu(loss0 - loss_t)
        depressor = (variance.float().exp() - 1.0).sum() / variance.numel()
        return loss0 * (1.0 + m.mean()) + depressor
