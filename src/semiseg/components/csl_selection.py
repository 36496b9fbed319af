"""CSL's pseudo-label selection: per image, a spectral 2-way split of the valid pixels in the
(confidence, residual dispersion) plane and a soft Gaussian weight around the reliable cluster
(docs/methods/csl.md, "The CSL weight", steps 1-8).

- `csl_weights`: the per-pixel weight w ∈ [0, 1] of a batch of probability maps, with every
  intermediate (MC, s, clusters, cluster statistics, reliable cluster, mask ratio).
- `spectral_clusters`: step 4 alone, on raw (B, N, 2) points: the closed form of the SVD of Xᵀ.

Steps 1-5 exist twice, with the same arithmetic: blocked (`_confidence_and_dispersion`, `_partition`), the
fastest form in eager PyTorch, and flat (`_flat_confidence_and_dispersion`, `_flat_partition`), the form
`torch.compile` fuses into a few passes (`csl_weights(..., compiled=True)`; docs/methods/csl.md, "Speed").

Everything is batched over the images: no Python loop over images, no host synchronisation
(masked sums instead of boolean indexing, `torch.where` instead of branches on values). The
per-pixel quantities (MC, s, the z-scores and w) are fp32; the per-image reductions (Gram matrix,
projections, cluster moments) run in float64 (fp32 on MPS, which lacks it). Autocast is disabled
and nothing is differentiated.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..errors import SemisegError

SELECT_RULES = ("mean_conf", "linear", "neglog")

_G_EPS = 1e-8  # g = (C−1)² / (2·(1 − MC + 1e-8))                         (docs/methods/csl.md, step 3)
_RANK_TOL = 1e-12  # σ1 ≤ 1e-12·σ0: every pixel goes to cluster 0         (docs/methods/csl.md, step 4, DECISION)
_LOG_EPS = 1e-8  # `neglog`: μ_MC − λ·log(μ_s + 1e-8)                     (docs/methods/csl.md, step 6)
_Z_EPS = 1e-8  # cz = (MC − μ_r[MC]) / √(σ²_r[MC] + ε)                     (docs/methods/csl.md, step 7)


class CSLSelection(NamedTuple):
    """The outputs of `csl_weights` for a batch of B images of H×W pixels.

    - weights (B, H, W) fp32 in [0, 1]: the soft weight w; 0 on invalid pixels.
    - reliable (B, H, W) bool: w == 1 on a valid pixel (TMP's reliable mask, the mask ratio's numerator).
    - cluster (B, H, W) int8: the spectral cluster 0/1 of each valid pixel, −1 on invalid ones.
    - confidence (B, H, W) fp32: MC = max_c P_c; 0 on invalid pixels.
    - dispersion (B, H, W) fp32: s = g_alpha·g·RV; 0 on invalid pixels.
    - means (B, 2, 2) fp32: μ_k per image, indexed [cluster k, (MC, s)].
    - variances (B, 2, 2) fp32: σ²_k (unbiased) per image, indexed as `means`.
    - reliable_cluster (B,) int64: r, the cluster whose statistics set the boundary.
    - mask_ratio 0-d fp32: Σ reliable / Σ valid over the batch (0 when no pixel is valid).
    """

    weights: torch.Tensor
    reliable: torch.Tensor
    cluster: torch.Tensor
    confidence: torch.Tensor
    dispersion: torch.Tensor
    means: torch.Tensor
    variances: torch.Tensor
    reliable_cluster: torch.Tensor
    mask_ratio: torch.Tensor


def _stats_dtype(device: torch.device) -> torch.dtype:
    """float64 for the per-image reductions, fp32 on MPS (which has no float64)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _pixel_block(probs: torch.Tensor) -> int:
    """Pixels per block of the class sweep: on the CPU a block of all B images keeps its five (B, block) fp32
    work arrays within ~1.3 MB, so the 4·(C−1) in-place steps run from the core's cache; elsewhere one block."""
    batch, _, pixels = probs.shape
    if probs.device.type != "cpu":
        return max(pixels, 1)
    return max(512, 65536 // max(batch, 1))


def _confidence_and_dispersion(probs: torch.Tensor, valid: torch.Tensor,
                               g_alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """MC and s of (B, C, N) fp32 probabilities, each (B, N) fp32 and 0 where the (B, N) 0/1 fp32 `valid`
    is 0 (docs/methods/csl.md, steps 1-3): the rows of step 4's X.

    One sweep over the C class planes keeps a running maximum M and adds every value the maximum
    does not keep: x = min(M, P_c) joins the sums, then M = max(M, P_c). At the end M = MC and
    the sums run over all entries but exactly one argmax entry, which is R:
        S1 = Σ_c R_c,  S2 = Σ_c R_c²
    (ties keep every other copy of the maximum, as zeroing a single argmax entry does). The argmax
    index itself is never needed. Summing R directly, not Σ_c P_c² − MC², avoids the cancellation
    that would wipe out the residual of a confident pixel (MC ≈ 1) in fp32.

    With m = S1/(C−1) (the mean of R over all C entries):
        Σ_{c=1..C} (R_c − m)² = S2 − 2m·S1 + C·m² = S2 − (C−2)·m²,
    which includes the zeroed argmax entry's (0 − m)² (the extra m²/(C−1) in RV, kept on purpose), so
        RV = (S2 − (C−2)·S1²/(C−1)²) / (C−1),   clamped at 0 against rounding (it is ≥ m²/(C−1) exactly),
        g  = (C−1)² / (2·(max(1 − MC, 0) + 1e-8)),   s = g_alpha·g·RV = g_alpha·(C−1)·RV' / (2·(1 − MC + 1e-8))
    with RV' = (C−1)·RV. The clamp of 1 − MC only matters for inputs whose maximum exceeds 1.
    In fp32, s carries a relative error of at most ~C·2⁻²⁴: the worst case is a near-uniform residual,
    where S2 ≈ (C−1)·m² and the difference is the m² term alone.

    The sweep runs block by block over the pixels (all images at once, `_pixel_block`), a loop over
    pixel blocks and class planes, never over images.
    """
    batch, num_classes, pixels = probs.shape
    confidence = torch.empty(batch, pixels, dtype=probs.dtype, device=probs.device)
    dispersion = torch.empty_like(confidence)
    block = _pixel_block(probs)
    work = torch.empty(3, batch, min(block, pixels), dtype=probs.dtype, device=probs.device)
    spread_coefficient = -(num_classes - 2) / (num_classes - 1) ** 2
    for start in range(0, pixels, block):
        part = slice(start, min(start + block, pixels))
        width = part.stop - start
        maximum = confidence[:, part]
        maximum.copy_(probs[:, 0, part])
        residual_sum, residual_sq, kept_out = work[0, :, :width], work[1, :, :width], work[2, :, :width]
        residual_sum.zero_()
        residual_sq.zero_()
        for c in range(1, num_classes):  # the class planes
            plane = probs[:, c, part]
            torch.minimum(maximum, plane, out=kept_out)
            residual_sq.addcmul_(kept_out, kept_out)
            residual_sum.add_(kept_out)
            torch.maximum(maximum, plane, out=maximum)
        spread = residual_sq.addcmul_(residual_sum, residual_sum, value=spread_coefficient).clamp_min_(0.0)
        denominator = torch.neg(maximum, out=kept_out).add_(1.0).clamp_min_(0.0).add_(_G_EPS)  # 1 − MC, exactly
        torch.div(spread, denominator, out=dispersion[:, part]).mul_(g_alpha * (num_classes - 1) / 2.0)
        # 0 on invalid pixels: products with the 0/1 mask (masked fills branch per pixel, slow on the CPU).
        dispersion[:, part].mul_(valid[:, part])
        maximum.mul_(valid[:, part])
    return confidence, dispersion


def _principal_axes(gram: torch.Tensor) -> torch.Tensor:
    """Unit eigenvectors of symmetric 2×2 matrices (B, 2, 2) as columns (B, 2, 2): u_0 for the larger eigenvalue.

    With G = [[a, b], [b, c]], h = hypot((a − c)/2, b) and λ0 = (a + c)/2 + h, an eigenvector of λ0 is
    (λ0 − c, b) = ((a − c)/2 + h, b) or (b, λ0 − a) = (b, (c − a)/2 + h); the first is used when a ≥ c and the
    second otherwise, so its large component is a sum of two non-negative terms (no cancellation).
    Both vanish only when a = c and b = 0 (an isotropic or zero G, where any basis is an eigenbasis): then
    u_0 = (1, 0). u_1 = (−u_0y, u_0x) is exactly orthogonal to it. Signs are arbitrary, as in an SVD.
    """
    a, b, c = gram[:, 0, 0], gram[:, 0, 1], gram[:, 1, 1]
    half_gap = (a - c) / 2
    h = torch.hypot(half_gap, b)
    first = a >= c
    vx = torch.where(first, half_gap + h, b)
    vy = torch.where(first, b, h - half_gap)
    norm = torch.hypot(vx, vy)
    degenerate = norm == 0
    safe_norm = torch.where(degenerate, torch.ones_like(norm), norm)
    ux = torch.where(degenerate, torch.ones_like(vx), vx / safe_norm)
    uy = torch.where(degenerate, torch.zeros_like(vy), vy / safe_norm)
    return torch.stack([torch.stack([ux, -uy], dim=-1), torch.stack([uy, ux], dim=-1)], dim=-2)


class _Partition(NamedTuple):
    """Step 4 and the sums step 5 needs, per image: in_cluster_1 (B, N) bool; sigma (B, 2); axes (B, 2, 2), u_k
    as columns; gram (B, 2, 2) = XᵀX; total (B, 2) = Σ X; first_1, second_1 (B, 2) = Σ X and Σ X² (per
    coordinate) over cluster 1. All but in_cluster_1 in the statistics dtype (float64; fp32 on MPS)."""

    in_cluster_1: torch.Tensor
    sigma: torch.Tensor
    axes: torch.Tensor
    gram: torch.Tensor
    total: torch.Tensor
    first_1: torch.Tensor
    second_1: torch.Tensor


def _point_blocks(first: torch.Tensor, second: torch.Tensor):
    """(part, X, scratch) for each block of pixels: X (B, 2, w) in the statistics dtype holds the rows (first,
    second) of the block, scratch is a contiguous array of the same shape; both are reused buffers (valid
    until the next block). `_pixel_block` wide: on a 2-core CPU, timed alone at 8 × 321², the three passes took
    9 ms at this width against 14 ms at half of it and 12 ms at twice it."""
    batch, pixels = first.shape
    block = min(_pixel_block(first[:, None]), max(pixels, 1))
    storage = torch.empty(2, batch * 2 * block, dtype=_stats_dtype(first.device), device=first.device)
    for start in range(0, pixels, block):
        part = slice(start, min(start + block, pixels))
        size = batch * 2 * (part.stop - start)
        points, scratch = (storage[i, :size].view(batch, 2, part.stop - start) for i in range(2))
        points[:, 0].copy_(first[:, part])
        points[:, 1].copy_(second[:, part])
        yield part, points, scratch


def _partition(first: torch.Tensor, second: torch.Tensor, valid: torch.Tensor) -> _Partition:
    """Step 4 on X with rows (first_j, second_j), each (B, N) (any float dtype, 0 on invalid pixels), valid (B, N)
    bool; see `spectral_clusters`. Three passes over the pixels, block by block (`_point_blocks`), each block
    converted to float64 (fp32 on MPS) in a buffer that stays in cache, so no (B, 2, N) array is ever made:
    1. XᵀX and Σ X (the Gram matrix gives the axes u_k, the sums are step 5's totals);
    2. σ_k = ‖X·u_k‖;
    3. the assignment a_j, and Σ X, Σ X² over cluster 1 (step 5).
    """
    batch, pixels = first.shape
    dtype, device = _stats_dtype(first.device), first.device
    gram = torch.zeros(batch, 2, 2, dtype=dtype, device=device)
    total = torch.zeros(batch, 2, dtype=dtype, device=device)
    for _, points, _ in _point_blocks(first, second):
        gram.baddbmm_(points, points.transpose(1, 2))  # XᵀX over the valid pixels (invalid ones are 0)
        total.add_(points.sum(dim=-1))
    axes = _principal_axes(gram)
    axes_t = axes.transpose(1, 2).contiguous()
    # σ_k = ‖X·u_k‖ = √(u_kᵀ XᵀX u_k) = √λ_k. Measured on the projections rather than taken from the
    # eigenvalue formula, σ1 of (numerically) rank-1 data stays at the rounding level of X itself
    # (~1e-16·σ0 in float64), so the 1e-12 DECISION below does fire for it.
    squares = torch.zeros(batch, 2, dtype=dtype, device=device)
    for _, points, projections in _point_blocks(first, second):
        squares.add_(torch.bmm(axes_t, points, out=projections).square_().sum(dim=-1))  # row k: (X_j·u_k)²
    sigma = squares.sqrt_()
    full_rank = (sigma[:, 1] > _RANK_TOL * sigma[:, 0])[:, None]  # [DECISION] otherwise every pixel → cluster 0
    cross = sigma.flip(-1)[..., None]
    in_cluster_1 = torch.empty(batch, pixels, dtype=torch.bool, device=device)
    first_1 = torch.zeros(batch, 2, 1, dtype=dtype, device=device)
    second_1 = torch.zeros(batch, 2, 1, dtype=dtype, device=device)
    for part, points, projections in _point_blocks(first, second):
        # a_j = argmax_k |X_j·u_k| / σ_k, compared cross-multiplied (no division by σ1 = 0): a_j = 1 iff
        # |X_j·u_1|·σ0 > |X_j·u_0|·σ1, so a tie → 0.
        scaled = torch.bmm(axes_t, points, out=projections).abs_().mul_(cross)
        member = in_cluster_1[:, part]
        torch.gt(scaled[:, 1], scaled[:, 0], out=member)
        member.logical_and_(valid[:, part]).logical_and_(full_rank)
        weight = member.to(dtype)[..., None]  # (B, w, 1)
        first_1.baddbmm_(points, weight)
        second_1.baddbmm_(points.square_(), weight)
    return _Partition(in_cluster_1, sigma, axes, gram, total, first_1.squeeze(-1), second_1.squeeze(-1))


def _flat_confidence_and_dispersion(probs: torch.Tensor, valid: torch.Tensor,
                                    g_alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """`_confidence_and_dispersion` written without blocks or in-place steps, for `torch.compile` (in eager
    mode it makes (B, C, N) temporaries and is several times slower). R keeps every entry below the maximum
    and, for ties, every copy of the maximum but one: S1 = Σ_{P_c < MC} P_c + (n_MC − 1)·MC, and S2 likewise,
    with n_MC the number of entries equal to MC; the same sums as the sweep's, in another order."""
    num_classes = probs.shape[1]
    maximum = probs.amax(dim=1, keepdim=True)
    below = probs < maximum
    kept = torch.where(below, probs, 0.0)
    confidence = maximum.squeeze(1)
    extra_copies = (num_classes - 1) - below.sum(dim=1, dtype=probs.dtype)
    residual_sum = kept.sum(dim=1) + extra_copies * confidence
    residual_sq = (kept * kept).sum(dim=1) + extra_copies * confidence * confidence
    spread_coefficient = -(num_classes - 2) / (num_classes - 1) ** 2
    spread = (residual_sq + spread_coefficient * residual_sum * residual_sum).clamp_min(0.0)
    denominator = (1.0 - confidence).clamp_min(0.0) + _G_EPS
    dispersion = spread / denominator * (g_alpha * (num_classes - 1) / 2.0)
    return confidence * valid, dispersion * valid


def _flat_partition(first: torch.Tensor, second: torch.Tensor, valid: torch.Tensor) -> _Partition:
    """`_partition` written as whole-array reductions, for `torch.compile` (it fuses each of the three passes into
    one loop, without the (B, 2, N) float64 array that eager mode makes here)."""
    dtype = _stats_dtype(first.device)
    x, y = first.to(dtype), second.to(dtype)
    xy = (x * y).sum(dim=-1)
    gram = torch.stack([torch.stack([(x * x).sum(dim=-1), xy], dim=-1),
                        torch.stack([xy, (y * y).sum(dim=-1)], dim=-1)], dim=-2)
    total = torch.stack([x.sum(dim=-1), y.sum(dim=-1)], dim=-1)
    axes = _principal_axes(gram)
    projection_0 = axes[:, 0:1, 0] * x + axes[:, 1:2, 0] * y  # X_j·u_0
    projection_1 = axes[:, 0:1, 1] * x + axes[:, 1:2, 1] * y  # X_j·u_1
    sigma = torch.stack([projection_0.square().sum(dim=-1), projection_1.square().sum(dim=-1)], dim=-1).sqrt()
    full_rank = (sigma[:, 1] > _RANK_TOL * sigma[:, 0])[:, None]  # [DECISION] as in `_partition`
    in_cluster_1 = (projection_1.abs() * sigma[:, 0:1] > projection_0.abs() * sigma[:, 1:2]) & valid & full_rank
    member = in_cluster_1.to(dtype)
    first_1 = torch.stack([(member * x).sum(dim=-1), (member * y).sum(dim=-1)], dim=-1)
    second_1 = torch.stack([(member * x * x).sum(dim=-1), (member * y * y).sum(dim=-1)], dim=-1)
    return _Partition(in_cluster_1, sigma, axes, gram, total, first_1, second_1)


@torch.no_grad()
def spectral_clusters(x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The uncentred spectral 2-way split of docs/methods/csl.md, step 4, per image.

    x (B, N, 2): the rows X_j = (MC_j, s_j) (any points); valid (B, N) bool: which rows belong to X.
    With the SVD Xᵀ = U·diag(σ_0, σ_1)·Vᵀ of each image's valid rows (σ_0 ≥ σ_1), each valid row goes to
    a_j = argmax_k |V_jk| = argmax_k |X_j·u_k| / σ_k, from the closed-form eigenvectors u_k of the 2×2
    Gram matrix XᵀX. Ties go to cluster 0, and so does every row of an image with σ_1 ≤ 1e-12·σ_0
    ([DECISION]; this covers one valid row, identical rows and no valid row).

    Returns
    - assignment (B, N) int64: 0/1 on valid rows, −1 on invalid ones;
    - sigma (B, 2): (σ_0, σ_1) = (‖X·u_0‖, ‖X·u_1‖), the singular values of Xᵀ;
    - u (B, 2, 2): u[b, :, k] = u_k, the left singular vectors of Xᵀ (as the columns of U), up to sign.
    sigma and u are float64 (fp32 on MPS). Computed with autocast off and no gradient.
    """
    if x.dim() != 3 or x.shape[-1] != 2:
        raise ValueError(f"spectral_clusters: x must be (B, N, 2), got {tuple(x.shape)}")
    if valid.shape != x.shape[:2]:
        raise ValueError(f"spectral_clusters: valid {tuple(valid.shape)} must be (B, N) = {tuple(x.shape[:2])}")
    with torch.autocast(device_type=x.device.type, enabled=False):
        valid = valid.detach().bool()
        points = torch.where(valid[..., None], x.detach().to(_stats_dtype(x.device)), 0.0)
        split = _partition(points[..., 0], points[..., 1], valid)
        sigma, axes = split.sigma, split.axes
        assignment = torch.where(valid, split.in_cluster_1.long(), -1)
    return assignment, sigma, axes


def _cluster_statistics(split: _Partition, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image and cluster: mean μ_k and unbiased variance σ²_k, each (B, 2, 2) [k, (MC, s)], and the pixel
    counts n_k (B, 2) int64.

    From the sums of `_partition`: cluster 1's Σ x and Σ x² per coordinate directly, cluster 0's as the image's
    totals (Σ x, and Σ x² from the diagonal of XᵀX) minus them. Then
    σ²_k = (Σ x² − n_k·μ_k²) / (n_k − 1), in float64: its rounding (~1e-16·μ²) stays far below the ε = 1e-8
    that step 7 adds to it (on MPS, in fp32, it is only approximate). A one-point cluster has variance 0; an
    empty cluster has mean 0 and variance 0; an image without a valid pixel gets μ = (1, 0) and σ² = (1, 1)
    for both clusters (docs/methods/csl.md, step 5).
    """
    dtype, in_cluster_1 = split.gram.dtype, split.in_cluster_1
    first_1, second_1, first_all = split.first_1, split.second_1, split.total
    second_all = torch.diagonal(split.gram, dim1=-2, dim2=-1)
    counts_1 = in_cluster_1.sum(dim=-1)
    counts_valid = valid.sum(dim=-1)
    first = torch.stack([first_all - first_1, first_1], dim=1)  # (B, 2, 2): [k, coordinate]
    second = torch.stack([second_all - second_1, second_1], dim=1)
    pixel_counts = torch.stack([counts_valid - counts_1, counts_1], dim=1)  # (B, 2)
    counts = pixel_counts.to(dtype)[..., None]  # (B, 2, 1)
    means = first / counts.clamp_min(1.0)  # an empty cluster: 0 / 1 = 0
    spread = (second - counts * means.square()).clamp_min(0.0)
    variances = torch.where(counts > 1, spread / (counts - 1.0).clamp_min(1.0), 0.0)
    empty_image = (counts_valid == 0)[:, None, None]
    fallback_means = torch.zeros_like(means)
    fallback_means[..., 0] = 1.0  # μ = (1, 0), built on the device (no host-to-device copy)
    means = torch.where(empty_image, fallback_means, means)
    variances = torch.where(empty_image, torch.ones_like(variances), variances)
    return means, variances, pixel_counts


def _reliable_cluster(means: torch.Tensor, occupied: torch.Tensor, select: str, select_lambda: float) -> torch.Tensor:
    """r (B,) per docs/methods/csl.md, step 6: the occupied cluster with the larger score, a tie → cluster 0.

    - `mean_conf`: μ_k[MC];
    - `linear`: μ_k[MC] − λ·μ_k[s];
    - `neglog`: μ_k[MC] − λ·log(μ_k[s] + 1e-8) (μ_k[s] ≥ 0, so the log is finite).
    An empty cluster (`occupied` False; its μ = 0 would win under `neglog`) is never chosen while the other
    one has pixels.
    """
    confidence, dispersion = means[..., 0], means[..., 1]
    if select == "mean_conf":
        score = confidence
    elif select == "linear":
        score = confidence - select_lambda * dispersion
    else:  # neglog
        score = confidence - select_lambda * torch.log(dispersion.clamp_min(0.0) + _LOG_EPS)
    score = torch.where(occupied, score, torch.full_like(score, -torch.inf))
    return (score[:, 1] > score[:, 0]).long()


def _soft_weights(confidence: torch.Tensor, dispersion: torch.Tensor, valid: torch.Tensor, centre: torch.Tensor,
                  scale: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 7 and 8's numerator on (B, N) fp32 MC, s and 0/1 `valid`, with the reliable cluster's μ_r (`centre`)
    and √(σ²_r + ε) (`scale`), each (B, 2) fp32: the weights w (B, N) fp32 and reliable = (w = 1) (B, N) bool.

    cz = (MC − μ_r[MC]) / √(σ²_r[MC] + ε) and rz = (μ_r[s] − s) / √(σ²_r[s] + ε). A pixel is inside the boundary
    when cz > 0 or rz > 0, i.e. max(cz, rz) > 0: there the exponent is zeroed, so w = exp(0) = 1 exactly;
    outside, w = exp(−cz²/α)·exp(−rz²/α) = exp(−(cz² + rz²)/α), which underflows to 0 far out, never to NaN;
    w = 0 on invalid pixels. Products with 0/1 masks instead of selections (masked fills branch per pixel,
    slow on the CPU).
    """
    confidence_z = (confidence - centre[:, 0:1]).div_(scale[:, 0:1])
    dispersion_z = (centre[:, 1:2] - dispersion).div_(scale[:, 1:2])
    outside = torch.maximum(confidence_z, dispersion_z) <= 0
    exponent = torch.addcmul(confidence_z.square_(), dispersion_z, dispersion_z).mul_(outside)
    weights = exponent.mul_(-1.0 / alpha).exp_().mul_(valid)
    return weights, weights == 1.0  # w = 0 on invalid pixels, so this is (w = 1) ∧ valid


def _check_arguments(probs: torch.Tensor, valid: torch.Tensor, alpha: float, g_alpha: float, select: str,
                     select_lambda: float) -> None:
    if probs.dim() != 4:
        raise ValueError(f"csl_weights: probs must be (B, C, H, W), got {tuple(probs.shape)}")
    if probs.shape[1] < 2:
        raise ValueError(f"csl_weights: needs at least 2 classes, got C = {probs.shape[1]}")
    if valid.shape != (probs.shape[0], *probs.shape[2:]):
        raise ValueError(f"csl_weights: valid {tuple(valid.shape)} must be (B, H, W) = "
                         f"{(probs.shape[0], *probs.shape[2:])}")
    if not alpha > 0:
        raise ValueError(f"csl_weights: alpha must be positive, got {alpha}")
    if not g_alpha >= 0 or g_alpha == float("inf"):
        raise ValueError(f"csl_weights: g_alpha must be finite and non-negative, got {g_alpha}")
    if select not in SELECT_RULES:
        raise ValueError(f"csl_weights: select must be one of {SELECT_RULES}, got {select!r}")
    if select_lambda != select_lambda or abs(select_lambda) == float("inf"):
        raise ValueError(f"csl_weights: select_lambda must be finite, got {select_lambda}")


def _steps(flat: torch.Tensor, mask: torch.Tensor, alpha: float, g_alpha: float, select: str, select_lambda: float,
           fused: bool = False) -> tuple[torch.Tensor, ...]:
    """Steps 1-8 on (B, C, N) fp32 probabilities and a (B, N) bool mask, blocked (eager) or flat (`fused`, for
    `torch.compile`): (weights, reliable, cluster, confidence, dispersion, means, variances, reliable cluster,
    mask ratio), each as `CSLSelection` describes it, per pixel on (B, N)."""
    batch = flat.shape[0]
    valid_float = mask.float()
    sweep, partition = ((_flat_confidence_and_dispersion, _flat_partition) if fused
                        else (_confidence_and_dispersion, _partition))
    confidence, dispersion = sweep(flat, valid_float, g_alpha)  # X: 0 if invalid
    split = partition(confidence, dispersion, mask)
    means, variances, counts = _cluster_statistics(split, mask)
    reliable_cluster = _reliable_cluster(means, counts > 0, select, select_lambda)

    index = reliable_cluster[:, None, None].expand(batch, 1, 2)
    centre = means.gather(1, index).squeeze(1).float()  # μ_r, (B, 2)
    scale = variances.gather(1, index).squeeze(1).add(_Z_EPS).sqrt().float()  # √(σ²_r + ε), (B, 2)
    weights, reliable = _soft_weights(confidence, dispersion, valid_float, centre, scale, alpha)
    mask_ratio = reliable.sum().float() / counts.sum().clamp_min(1).float()
    cluster = split.in_cluster_1.to(torch.int8) - (~mask).to(torch.int8)  # 0/1, −1 on invalid
    return (weights, reliable, cluster, confidence, dispersion, means.float(), variances.float(), reliable_cluster,
            mask_ratio)


_compiled = None


def _compiled_steps(*args, **kwargs) -> tuple[torch.Tensor, ...]:
    """`_steps` in its flat form through `torch.compile`, built on first use; a build failure (no C++ compiler,
    no Triton) is one line naming method.csl_compile."""
    global _compiled
    from torch._dynamo.exc import TorchDynamoException
    from torch._inductor.exc import CppCompileError, InvalidCxxCompiler

    if _compiled is None:
        _compiled = torch.compile(_steps)
    try:
        return _compiled(*args, **kwargs)
    except (TorchDynamoException, CppCompileError, InvalidCxxCompiler) as error:  # long, multi-line messages
        first_line = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise SemisegError(f"method.csl_compile: torch.compile could not build the CSL selection ({first_line}); "
                           "set method.csl_compile=false") from error


@torch.no_grad()
def csl_weights(probs: torch.Tensor, valid: torch.Tensor, alpha: float = 2.0, g_alpha: float = 1.0,
                select: str = "mean_conf", select_lambda: float = 0.25, compiled: bool = False) -> CSLSelection:
    """CSL's soft per-pixel weight (docs/methods/csl.md, "The CSL weight", steps 1-8).

    probs (B, C, H, W): class probabilities (softmax of the detached weak-view logits; any float dtype,
    converted to fp32); valid (B, H, W) bool: the pixels that take part.

    Per image b, over its valid pixels j:
    1. MC_j = max_c P_cj.
    2. R = P with one argmax entry zeroed; m_j = (1/(C−1))·Σ_c R_cj; RV_j = (1/(C−1))·Σ_{c=1..C}(R_cj − m_j)²,
       the zeroed entry included.
    3. g_j = (C−1)² / (2·(1 − MC_j + 1e-8)), s_j = g_alpha·g_j·RV_j.
    4. X = rows (MC_j, s_j), not centred; a_j from `spectral_clusters`.
    5. μ_k, σ²_k (unbiased) of each cluster; one point → σ² = 0, empty → μ = σ² = 0, no valid pixel →
       μ = (1, 0), σ² = (1, 1).
    6. r = the cluster with the larger score (`select`: `mean_conf` | `linear` | `neglog`, λ = `select_lambda`);
       a tie → cluster 0.
    7. cz_j = (MC_j − μ_r[MC]) / √(σ²_r[MC] + 1e-8), rz_j = (μ_r[s] − s_j) / √(σ²_r[s] + 1e-8);
       w_j = 1 if cz_j > 0 or rz_j > 0, else exp(−cz_j²/α)·exp(−rz_j²/α); w_j = 0 on invalid pixels.
    8. mask_ratio = Σ_j 1[w_j = 1 ∧ valid_j] / Σ_j valid_j over the batch.

    The m of step 2 is the mean of R itself (= (1 − MC)/(C−1) for probabilities that sum to 1).
    Finite for MC = 1 exactly (g ≤ (C−1)²/2e-8, RV = 0), for one valid pixel and for none.
    Never differentiated: runs under no_grad with autocast off, whatever the input.

    compiled: run steps 1-8 in their flat form through `torch.compile` (a C++ compiler on the CPU, Triton on a
    GPU; the first call with a new shape compiles, about a minute on a 2-core CPU): the same values to rounding
    (docs/methods/csl.md, "Speed"). A compiler that cannot build stops with one line naming method.csl_compile.
    """
    _check_arguments(probs, valid, alpha, g_alpha, select, select_lambda)
    batch, num_classes, height, width = probs.shape
    with torch.autocast(device_type=probs.device.type, enabled=False):
        flat = probs.detach().float().contiguous().view(batch, num_classes, height * width)
        mask = valid.detach().bool().reshape(batch, height * width)
        steps = _compiled_steps if compiled else _steps
        outputs = steps(flat, mask, alpha, g_alpha, select, select_lambda, fused=compiled)
    shape = (batch, height, width)
    weights, reliable, cluster, confidence, dispersion, means, variances, reliable_cluster, mask_ratio = outputs
    return CSLSelection(
        weights=weights.view(shape),
        reliable=reliable.view(shape),
        cluster=cluster.view(shape),
        confidence=confidence.view(shape),
        dispersion=dispersion.view(shape),
        means=means,
        variances=variances,
        reliable_cluster=reliable_cluster,
        mask_ratio=mask_ratio,
    )
