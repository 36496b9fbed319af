"""CSL's pseudo-label selection (docs/methods/csl.md, "The CSL weight"): MC and s by hand, the spectral split
against torch.linalg.svd, the reliable-cluster rules, the soft weights against an independent float64 numpy
reference of steps 1-7, edge cases, batching, dtype and gradients. The tests that take `form` run twice: on the
blocked steps and on the flat ones that `compiled=True` hands to torch.compile (here run eagerly: the same
arithmetic, without the minute of compilation)."""

import math

import numpy as np
import pytest
import torch

import semiseg.components.csl_selection as csl_selection
from semiseg.components.csl_selection import CSLSelection, csl_weights, spectral_clusters
from semiseg.errors import SemisegError

@pytest.fixture(params=["blocked", "flat"])
def form(request, monkeypatch):
    """The keyword arguments of `csl_weights` for one form of steps 1-5: {} (blocked) or {"compiled": True} with
    torch.compile replaced by the flat steps run eagerly."""
    if request.param == "blocked":
        return {}
    monkeypatch.setattr(csl_selection, "_compiled_steps", csl_selection._steps)
    return {"compiled": True}


# --- an independent per-image reference, float64 numpy, written straight from steps 1-7 -------------------------


def numpy_csl(probs, valid, alpha=2.0, g_alpha=1.0, select="mean_conf", select_lambda=0.25):
    """One image: probs (C, H, W), valid (H, W). Explicit R, np.var, np.linalg.svd; nothing shared with the code."""
    probs = np.asarray(probs, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    num_classes = probs.shape[0]
    columns = probs.reshape(num_classes, -1)[:, valid.ravel()]  # (C, n)
    n = columns.shape[1]
    confidence = columns.max(axis=0)  # step 1
    residual = columns.copy()  # step 2: R = P with the argmax entry zeroed
    residual[columns.argmax(axis=0), np.arange(n)] = 0.0
    mean_residual = residual.sum(axis=0) / (num_classes - 1)
    rv = ((residual - mean_residual) ** 2).sum(axis=0) / (num_classes - 1)  # all C entries, the zero included
    g = (num_classes - 1) ** 2 / (2.0 * (1.0 - confidence + 1e-8))  # step 3
    dispersion = g_alpha * g * rv
    x = np.stack([confidence, dispersion], axis=1)  # step 4, not centred
    assignment = np.zeros(n, dtype=np.int64)
    if n > 0:
        _, sigma, vt = np.linalg.svd(x.T, full_matrices=False)
        sigma_1 = sigma[1] if sigma.size > 1 else 0.0
        if sigma_1 > 1e-12 * sigma[0]:
            assignment = np.argmax(np.abs(vt.T), axis=1)  # the first index on a tie: cluster 0
    means = np.zeros((2, 2))  # step 5
    variances = np.zeros((2, 2))
    for k in range(2):
        members = x[assignment == k]
        if len(members) >= 1:
            means[k] = members.mean(axis=0)
        if len(members) >= 2:
            variances[k] = members.var(axis=0, ddof=1)
    if n == 0:
        means[:] = [1.0, 0.0]
        variances[:] = 1.0
    if select == "mean_conf":  # step 6
        score = means[:, 0]
    elif select == "linear":
        score = means[:, 0] - select_lambda * means[:, 1]
    else:
        score = means[:, 0] - select_lambda * np.log(means[:, 1] + 1e-8)
    r = 1 if score[1] > score[0] else 0
    cz = (confidence - means[r, 0]) / np.sqrt(variances[r, 0] + 1e-8)  # step 7
    rz = (means[r, 1] - dispersion) / np.sqrt(variances[r, 1] + 1e-8)
    w = np.where((cz > 0) | (rz > 0), 1.0, np.exp(-cz ** 2 / alpha) * np.exp(-rz ** 2 / alpha))

    def scatter(values, fill):
        full = np.full(valid.size, fill, dtype=np.asarray(values).dtype if n else np.float64)
        full[valid.ravel()] = values
        return full.reshape(valid.shape)

    return {"weights": scatter(w, 0.0), "cluster": scatter(assignment, -1), "confidence": scatter(confidence, 0.0),
            "dispersion": scatter(dispersion, 0.0), "means": means, "variances": variances, "reliable_cluster": r,
            "reliable": scatter(w == 1.0, False), "valid": valid}


def random_probs(batch, num_classes, height, width, seed):
    """Softmax of logits with a per-pixel temperature, so MC spans from near 1/C to near 1."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, num_classes, height, width, generator=generator)
    scale = 0.3 + 6.0 * torch.rand(batch, 1, height, width, generator=generator)
    return (logits * scale).softmax(dim=1)


def three_masks(height, width, seed):
    """All valid; a random ~70 %; a rectangle."""
    generator = torch.Generator().manual_seed(seed)
    rect = torch.zeros(height, width, dtype=torch.bool)
    rect[1:height - 1, 2:width - 1] = True
    return torch.stack([torch.ones(height, width, dtype=torch.bool),
                        torch.rand(height, width, generator=generator) < 0.7, rect])


def column_image(columns):
    """(1, C, 1, n) probabilities from a list of n probability vectors."""
    probs = torch.tensor(columns, dtype=torch.float32).T
    return probs.reshape(1, probs.shape[0], 1, probs.shape[1])


def assert_finite(out: CSLSelection):
    for name, value in out._asdict().items():
        if value.is_floating_point():
            assert torch.isfinite(value).all(), name


# --- steps 1-3: MC and s by hand ----------------------------------------------------------------------------------


def test_confidence_and_dispersion_hand_values(form):
    # C = 3, so g = 4 / (2·(1 − MC + 1e-8)) and RV = Σ_c (R_c − m)² / 2 over all three entries.
    probs = column_image([[0.95, 0.025, 0.025],  # R = (0, .025, .025), m = .025: only the zeroed entry's m²
                          [0.4, 0.35, 0.25],  # R = (0, .35, .25), m = .3: .09 + .0025 + .0025
                          [0.4, 0.4, 0.2],  # a tie: one 0.4 is zeroed, the other stays in R = (0, .4, .2)
                          [0.2, 0.7, 0.1]])  # the maximum need not be class 0
    out = csl_weights(probs, torch.ones(1, 1, 4, dtype=torch.bool), **form)
    rv = np.array([0.025 ** 2 / 2, 0.095 / 2, 0.11 / 2, ((0.2 - 0.15) ** 2 + 0.15 ** 2 + (0.1 - 0.15) ** 2) / 2])
    confidence = np.array([0.95, 0.4, 0.4, 0.7])
    expected = 4.0 / (2.0 * (1.0 - confidence + 1e-8)) * rv
    np.testing.assert_allclose(out.confidence.flatten().numpy(), confidence, rtol=1e-6)
    np.testing.assert_allclose(out.dispersion.flatten().numpy(), expected, rtol=1e-5)
    assert out.dispersion[0, 0, 0].item() == pytest.approx(0.0125, rel=1e-5)  # the extra m²/(C−1) term alone
    # g_alpha scales s linearly.
    half = csl_weights(probs, torch.ones(1, 1, 4, dtype=torch.bool), g_alpha=0.5, **form)
    torch.testing.assert_close(half.dispersion, out.dispersion * 0.5)


def test_dispersion_of_confident_pixels_is_accurate_in_fp32(form):
    # MC close to 1: Σ_c P_c² − MC² would cancel in fp32; the sum over R does not.
    eps = [1e-3, 1e-4, 1e-5]
    columns = [[1.0 - e, 0.7 * e, 0.2 * e, 0.1 * e] for e in eps]
    probs = column_image(columns)
    out = csl_weights(probs, torch.ones(1, 1, 3, dtype=torch.bool), **form)
    reference = numpy_csl(probs[0].numpy(), np.ones((1, 3), dtype=bool))
    np.testing.assert_allclose(out.dispersion.flatten().numpy(), reference["dispersion"].ravel(), rtol=1e-4)


# --- step 4: the spectral split -------------------------------------------------------------------------------------


def test_spectral_clusters_splits_two_separated_groups():
    generator = torch.Generator().manual_seed(1)
    high = torch.tensor([0.95, 0.02]) + 0.01 * torch.rand(20, 2, generator=generator)
    low = torch.tensor([0.45, 0.60]) + 0.01 * torch.rand(15, 2, generator=generator)
    points = torch.cat([high, low])[None]
    assignment, sigma, axes = spectral_clusters(points, torch.ones(1, 35, dtype=torch.bool))
    assert assignment.dtype == torch.int64
    assert set(assignment[0, :20].tolist()) == {assignment[0, 0].item()}
    assert set(assignment[0, 20:].tolist()) == {1 - assignment[0, 0].item()}
    assert sigma[0, 0] >= sigma[0, 1] > 0


def test_csl_weights_splits_two_separated_groups_exactly(form):
    # C = 21, interleaved over the image: 24 pixels of (MC ≈ .95, a near-uniform residual: s ≈ .0015) and
    # 24 of (MC ≈ .5, the residual mostly in one class: s ≈ 4).
    generator = torch.Generator().manual_seed(0)
    columns = []
    for i in range(48):
        jitter = torch.rand(20, generator=generator)
        if i % 2 == 0:
            mc = 0.95 + 0.01 * torch.rand((), generator=generator).item()
            rest = 1.0 + 0.2 * jitter
        else:
            mc = 0.5 + 0.02 * torch.rand((), generator=generator).item()
            rest = 0.01 * jitter
            rest[0] = 1.0
        columns.append([mc] + ((1 - mc) * rest / rest.sum()).tolist())
    probs = column_image(columns).reshape(1, 21, 6, 8)
    out = csl_weights(probs, torch.ones(1, 6, 8, dtype=torch.bool), **form)
    cluster = out.cluster.flatten()
    confident = torch.arange(48) % 2 == 0
    assert (cluster[confident] == cluster[0]).all()
    assert (cluster[~confident] == 1 - cluster[0]).all()
    # mean_conf: the reliable cluster is the confident group.
    assert out.reliable_cluster.item() == cluster[0].item()
    assert out.means[0, cluster[0], 0] > out.means[0, 1 - cluster[0], 0]
    # The other group lies tens of standard deviations away on both axes: weight 0.
    assert out.weights.flatten()[~confident].max().item() < 1e-6
    # One pixel of the confident group, by hand from the returned statistics (outside: cz ≤ 0 and rz ≤ 0).
    r = out.reliable_cluster.item()
    mu, var = out.means[0, r].double(), out.variances[0, r].double()
    cz = (out.confidence.flatten().double() - mu[0]) / torch.sqrt(var[0] + 1e-8)
    rz = (mu[1] - out.dispersion.flatten().double()) / torch.sqrt(var[1] + 1e-8)
    outside = confident & (cz <= 0) & (rz <= 0)
    assert outside.any()
    j = int(torch.nonzero(outside)[0])
    hand = math.exp(-cz[j].item() ** 2 / 2.0) * math.exp(-rz[j].item() ** 2 / 2.0)
    assert out.weights.flatten()[j].item() == pytest.approx(hand, rel=1e-5, abs=1e-7)
    assert (out.weights.flatten()[confident & ((cz > 0) | (rz > 0))] == 1.0).all()


def test_closed_form_matches_svd_per_image_with_different_masks():
    generator = torch.Generator().manual_seed(3)
    batch, n = 5, 60
    x = torch.rand(batch, n, 2, generator=generator, dtype=torch.float64)
    x[..., 1] *= 3.0
    x[2] = x[2] * torch.tensor([1.0, 0.01], dtype=torch.float64)  # a flat image: σ1 ≪ σ0
    valid = torch.ones(batch, n, dtype=torch.bool)
    valid[1] = torch.rand(n, generator=generator) < 0.5
    valid[3, 7:] = False  # 7 points
    valid[4, 2:] = False  # 2 points
    assignment, sigma, axes = spectral_clusters(x, valid)
    for b in range(batch):
        rows = x[b][valid[b]]
        u, s, vh = torch.linalg.svd(rows.T, full_matrices=False)
        torch.testing.assert_close(sigma[b], s, rtol=1e-10, atol=1e-12)
        for k in range(2):  # the same axes, up to sign
            assert abs(float(axes[b, :, k] @ u[:, k])) == pytest.approx(1.0, abs=1e-9)
        expected = torch.argmax(vh.T.abs(), dim=1)
        assert torch.equal(assignment[b][valid[b]], expected)
        assert (assignment[b][~valid[b]] == -1).all()
        assert sigma[b, 0] >= sigma[b, 1]


def test_closed_form_accepts_fp32_points_and_matches_svd():
    generator = torch.Generator().manual_seed(4)
    x = torch.rand(3, 40, 2, generator=generator)
    valid = torch.rand(3, 40, generator=generator) < 0.8
    assignment, sigma, _ = spectral_clusters(x, valid)
    for b in range(3):
        _, s, vh = torch.linalg.svd(x[b][valid[b]].double().T, full_matrices=False)
        torch.testing.assert_close(sigma[b], s)
        assert torch.equal(assignment[b][valid[b]], torch.argmax(vh.T.abs(), dim=1))


def test_spectral_degenerate_cases_go_to_cluster_0():
    direction = torch.tensor([0.8, 0.6], dtype=torch.float64)
    generator = torch.Generator().manual_seed(5)
    x = torch.rand(4, 10, 2, generator=generator, dtype=torch.float64)
    x[1] = torch.rand(10, 1, generator=generator, dtype=torch.float64) * direction  # collinear with the origin
    x[2] = torch.tensor([0.7, 0.2], dtype=torch.float64)  # ten identical points
    valid = torch.ones(4, 10, dtype=torch.bool)
    valid[0] = False
    valid[0, 4] = True  # one point
    valid[3] = False  # none
    assignment, sigma, _ = spectral_clusters(x, valid)
    assert assignment[0, 4] == 0 and (assignment[0, valid[0].logical_not()] == -1).all()
    assert (assignment[1] == 0).all() and (assignment[2] == 0).all()
    assert (assignment[3] == -1).all()
    assert (sigma[:3, 1] <= 1e-12 * sigma[:3, 0]).all()
    assert torch.equal(sigma[3], torch.zeros(2, dtype=sigma.dtype))


def test_spectral_ties_go_to_cluster_0():
    # (1, 1) and (1, −1): XᵀX = 2·I, σ0 = σ1 = √2, and |X_j·u_0| = |X_j·u_1| for both points.
    x = torch.tensor([[[1.0, 1.0], [1.0, -1.0]]], dtype=torch.float64)
    assignment, sigma, _ = spectral_clusters(x, torch.ones(1, 2, dtype=torch.bool))
    assert torch.equal(assignment, torch.zeros(1, 2, dtype=torch.int64))
    torch.testing.assert_close(sigma, torch.full((1, 2), math.sqrt(2.0), dtype=torch.float64))


# --- step 6: the reliable cluster -----------------------------------------------------------------------------------


def two_group_image():
    """C = 21. Group A: MC ≈ .95 with its residual in one class (s ≈ .43); group B: MC ≈ .5 with a uniform
    residual (s ≈ .012). mean_conf prefers A; a large λ (linear) or the log (neglog) prefers B."""
    generator = torch.Generator().manual_seed(0)
    columns = []
    for i in range(40):
        if i < 20:
            mc = 0.95 + 0.01 * torch.rand((), generator=generator).item()
            columns.append([mc, 1 - mc] + [0.0] * 19)
        else:
            mc = 0.5 + 0.02 * torch.rand((), generator=generator).item()
            columns.append([mc] + [(1 - mc) / 20] * 20)
    return column_image(columns).reshape(1, 21, 5, 8), torch.ones(1, 5, 8, dtype=torch.bool)


@pytest.mark.parametrize("select, select_lambda, group", [
    ("mean_conf", 0.25, "A"), ("linear", 0.25, "A"), ("linear", 2.0, "B"), ("neglog", 0.25, "B")])
def test_reliable_cluster_rules(select, select_lambda, group):
    probs, valid = two_group_image()
    out = csl_weights(probs, valid, select=select, select_lambda=select_lambda)
    cluster_a = out.cluster.flatten()[0].item()
    assert (out.cluster.flatten()[:20] == cluster_a).all() and (out.cluster.flatten()[20:] == 1 - cluster_a).all()
    expected = cluster_a if group == "A" else 1 - cluster_a
    assert out.reliable_cluster.item() == expected
    means = out.means[0].double()
    if select == "mean_conf":
        score = means[:, 0]
    elif select == "linear":
        score = means[:, 0] - select_lambda * means[:, 1]
    else:
        score = means[:, 0] - select_lambda * torch.log(means[:, 1] + 1e-8)
    assert out.reliable_cluster.item() == int(torch.argmax(score))
    reference = numpy_csl(probs[0].numpy(), valid[0].numpy(), select=select, select_lambda=select_lambda)
    assert out.reliable_cluster.item() == reference["reliable_cluster"]
    # Group B's s spreads over only ~1 % of its value (a uniform residual), and s in fp32 carries a relative
    # error up to ~C·2⁻²⁴ there (its RV is the difference S2 − (C−2)·m²), which the z-score against B's tiny
    # σ_s amplifies ~100×: hence 1e-3 when B sets the boundary.
    np.testing.assert_allclose(out.weights[0].numpy(), reference["weights"], rtol=0,
                               atol=1e-5 if group == "A" else 1e-3)


def test_reliable_cluster_tie_goes_to_cluster_0():
    # Two pixels with the same MC and different s fall into different clusters with equal mean MC: the
    # `mean_conf` scores tie, and so do the `linear` ones with λ = 0. The tie goes to cluster 0.
    probs = column_image([[0.6, 0.4, 0.0, 0.0], [0.6, 0.2, 0.1, 0.1]])
    valid = torch.ones(1, 1, 2, dtype=torch.bool)
    for select, select_lambda in (("mean_conf", 0.25), ("linear", 0.0)):
        out = csl_weights(probs, valid, select=select, select_lambda=select_lambda)
        assert sorted(out.cluster.flatten().tolist()) == [0, 1]
        assert out.means[0, 0, 0] == out.means[0, 1, 0]
        assert out.reliable_cluster.item() == 0


# --- step 7: the weights, against the numpy reference ----------------------------------------------------------------


@pytest.mark.parametrize("alpha, g_alpha, select", [(2.0, 1.0, "mean_conf"), (8.0, 0.5, "linear"),
                                                    (2.0, 1.0, "neglog")])
@pytest.mark.parametrize("num_classes, height, width", [(6, 7, 9), (21, 12, 13)])
def test_matches_numpy_reference_on_random_images(alpha, g_alpha, select, num_classes, height, width, form):
    probs = random_probs(3, num_classes, height, width, seed=num_classes)
    valid = three_masks(height, width, seed=num_classes)
    out = csl_weights(probs, valid, alpha=alpha, g_alpha=g_alpha, select=select, **form)
    for b in range(3):
        reference = numpy_csl(probs[b].numpy(), valid[b].numpy(), alpha, g_alpha, select)
        np.testing.assert_array_equal(out.cluster[b].numpy(), reference["cluster"])
        assert out.reliable_cluster[b].item() == reference["reliable_cluster"]
        np.testing.assert_allclose(out.confidence[b].numpy(), reference["confidence"], rtol=1e-6, atol=0)
        np.testing.assert_allclose(out.dispersion[b].numpy(), reference["dispersion"], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(out.means[b].numpy(), reference["means"], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(out.variances[b].numpy(), reference["variances"], rtol=1e-4, atol=1e-8)
        np.testing.assert_allclose(out.weights[b].numpy(), reference["weights"], rtol=0, atol=1e-5)
    valid_count = valid.sum().item()
    assert out.mask_ratio.item() == pytest.approx(out.reliable.sum().item() / valid_count)


def test_weights_are_one_inside_and_gaussian_outside():
    probs = random_probs(3, 8, 10, 11, seed=7)
    valid = three_masks(10, 11, seed=7)
    out = csl_weights(probs, valid, alpha=3.0)
    assert out.weights.dtype == torch.float32 and out.reliable.dtype == torch.bool
    assert out.cluster.dtype == torch.int8 and out.reliable_cluster.dtype == torch.int64
    assert out.means.shape == (3, 2, 2) and out.variances.shape == (3, 2, 2) and out.mask_ratio.dim() == 0
    assert ((out.weights >= 0) & (out.weights <= 1)).all()
    assert (out.weights[~valid] == 0).all() and (out.cluster[~valid] == -1).all()
    assert set(out.cluster[valid].unique().tolist()) <= {0, 1}
    assert torch.equal(out.reliable, (out.weights == 1) & valid)
    assert out.mask_ratio.item() == pytest.approx(out.reliable.sum().item() / valid.sum().item())
    r = out.reliable_cluster
    mu = out.means.double()[torch.arange(3), r][:, None, None, :]
    sd = torch.sqrt(out.variances.double()[torch.arange(3), r] + 1e-8)[:, None, None, :]
    cz = (out.confidence.double() - mu[..., 0]) / sd[..., 0]
    rz = (mu[..., 1] - out.dispersion.double()) / sd[..., 1]
    inside = ((cz > 0) | (rz > 0)) & valid
    outside = ~((cz > 0) | (rz > 0)) & valid
    assert inside.any() and outside.any()
    assert (out.weights[inside] == 1).all()
    expected = torch.exp(-cz ** 2 / 3.0) * torch.exp(-rz ** 2 / 3.0)
    torch.testing.assert_close(out.weights[outside].double(), expected[outside], rtol=1e-4, atol=1e-6)
    # Outside the reliable side the weight decays with the distance: farther on both axes, smaller weight.
    assert (out.weights[outside] < 1).any()


# --- edge cases -----------------------------------------------------------------------------------------------------


def test_no_valid_one_valid_and_one_hot_images_are_finite(form):
    num_classes, height, width = 4, 3, 5
    probs = random_probs(5, num_classes, height, width, seed=11)
    one_hot = torch.nn.functional.one_hot(torch.arange(height * width) % num_classes, num_classes)
    probs[2] = one_hot.T.reshape(num_classes, height, width).float()  # MC = 1 exactly everywhere
    probs[3, :, :, :2] = probs[2, :, :, :2]  # MC = 1 on some pixels only
    probs[4] = 1.0 / num_classes  # uniform: every class ties for the maximum
    valid = torch.ones(5, height, width, dtype=torch.bool)
    valid[0] = False
    valid[1] = False
    valid[1, 1, 2] = True
    out = csl_weights(probs, valid, **form)
    assert_finite(out)
    assert ((out.weights >= 0) & (out.weights <= 1)).all()
    # No valid pixel: weights 0, clusters −1, μ = (1, 0), σ² = (1, 1).
    assert (out.weights[0] == 0).all() and (out.cluster[0] == -1).all()
    torch.testing.assert_close(out.means[0], torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    torch.testing.assert_close(out.variances[0], torch.ones(2, 2))
    # One valid pixel: cluster 0, variance 0, weight 1 (cz = rz = 0: exp(0) = 1).
    assert out.cluster[1, 1, 2] == 0 and out.weights[1, 1, 2] == 1 and out.weights[1].sum() == 1
    assert torch.equal(out.variances[1], torch.zeros(2, 2))
    # One-hot everywhere: MC = 1, s = 0 for every pixel; one point repeated → cluster 0, weight 1.
    assert (out.confidence[2] == 1).all() and (out.dispersion[2] == 0).all()
    assert (out.cluster[2] == 0).all() and (out.weights[2] == 1).all()
    assert (out.dispersion[3, :, :2] == 0).all()
    # Uniform: R = (0, 1/C, …), m = 1/C, RV = m²/(C−1) from the zeroed entry alone.
    m = 1.0 / num_classes
    expected_s = (num_classes - 1) ** 2 / (2 * (1 - m + 1e-8)) * m ** 2 / (num_classes - 1)
    torch.testing.assert_close(out.dispersion[4], torch.full((height, width), expected_s))
    # The mask ratio counts valid pixels only.
    valid_total = valid.sum().item()
    assert out.mask_ratio.item() == pytest.approx(out.reliable.sum().item() / valid_total)


def test_no_valid_pixel_in_the_whole_batch(form):
    out = csl_weights(random_probs(2, 3, 4, 4, seed=0), torch.zeros(2, 4, 4, dtype=torch.bool), **form)
    assert_finite(out)
    assert out.mask_ratio.item() == 0.0 and (out.weights == 0).all() and not out.reliable.any()


# --- batching, blocks, dtypes, gradients ----------------------------------------------------------------------------


def test_batched_equals_per_image():
    probs = random_probs(3, 7, 11, 13, seed=21)
    valid = three_masks(11, 13, seed=21)
    out = csl_weights(probs, valid)
    for b in range(3):
        alone = csl_weights(probs[b:b + 1], valid[b:b + 1])
        for name in ("weights", "confidence", "dispersion", "means", "variances"):
            torch.testing.assert_close(getattr(alone, name)[0], getattr(out, name)[b], rtol=1e-6, atol=1e-7)
        for name in ("cluster", "reliable", "reliable_cluster"):
            assert torch.equal(getattr(alone, name)[0], getattr(out, name)[b]), name


def test_pixel_blocks_do_not_change_the_result(monkeypatch):
    probs = random_probs(2, 5, 9, 10, seed=8)
    valid = three_masks(9, 10, seed=8)[:2]
    whole = csl_weights(probs, valid)
    monkeypatch.setattr(csl_selection, "_pixel_block", lambda flat: 7)  # 13 blocks, the last one of 6 pixels
    blocks = csl_weights(probs, valid)
    for name, value in whole._asdict().items():
        assert torch.equal(value, getattr(blocks, name)), name


def test_several_blocks_at_the_default_size():
    # B = 1: the CPU block is 65536 pixels; 300 × 250 = 75000 pixels make two blocks.
    probs = random_probs(1, 4, 300, 250, seed=9)
    valid = torch.ones(1, 300, 250, dtype=torch.bool)
    valid[0, :5] = False
    out = csl_weights(probs, valid)
    expected_confidence = torch.where(valid, probs.amax(dim=1), 0.0)
    assert torch.equal(out.confidence, expected_confidence)
    sample = numpy_csl(probs[0, :, 100:110, 200:210].numpy(), np.ones((10, 10), dtype=bool))
    np.testing.assert_allclose(out.dispersion[0, 100:110, 200:210].numpy(), sample["dispersion"], rtol=1e-5,
                               atol=1e-7)


def test_bf16_input_gives_the_fp32_result_of_its_values():
    probs = random_probs(2, 5, 6, 7, seed=13)
    valid = three_masks(6, 7, seed=13)[:2]
    low = probs.bfloat16()
    out = csl_weights(low, valid)
    expected = csl_weights(low.float(), valid)
    for name, value in out._asdict().items():
        assert torch.equal(value, getattr(expected, name)), name
    assert out.weights.dtype == torch.float32 and out.confidence.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = csl_weights(probs, valid)
    plain = csl_weights(probs, valid)
    for name, value in under_autocast._asdict().items():
        assert value.dtype == getattr(plain, name).dtype and torch.equal(value, getattr(plain, name)), name


def test_no_gradient_flows():
    logits = torch.randn(2, 5, 4, 4, requires_grad=True)
    probs = logits.softmax(dim=1)
    out = csl_weights(probs, torch.ones(2, 4, 4, dtype=torch.bool))
    for name, value in out._asdict().items():
        assert not value.requires_grad and value.grad_fn is None, name
    points = torch.rand(1, 6, 2, requires_grad=True)
    for value in spectral_clusters(points, torch.ones(1, 6, dtype=torch.bool)):
        assert not value.requires_grad


def test_argument_checks():
    probs = random_probs(1, 3, 2, 2, seed=0)
    valid = torch.ones(1, 2, 2, dtype=torch.bool)
    with pytest.raises(ValueError):
        csl_weights(probs, valid, select="entropy")
    with pytest.raises(ValueError):
        csl_weights(probs, valid, alpha=0.0)
    with pytest.raises(ValueError):
        csl_weights(probs, valid, g_alpha=-1.0)
    with pytest.raises(ValueError):
        csl_weights(probs[:, :1], valid)
    with pytest.raises(ValueError):
        csl_weights(probs, valid[:, :1])
    with pytest.raises(ValueError):
        spectral_clusters(torch.rand(1, 4, 3), torch.ones(1, 4, dtype=torch.bool))


@pytest.mark.parametrize("select", ["mean_conf", "linear", "neglog"])
def test_an_empty_cluster_is_never_the_reliable_one(select, form):
    # identical pixels: rank-1 points, all in cluster 0 (the σ_1 ≈ 0 DECISION); cluster 1 is empty (μ = 0),
    # which `neglog` would otherwise prefer (−λ·log(1e-8) is large)
    probs = torch.tensor([0.7, 0.2, 0.1]).view(1, 3, 1, 1).expand(1, 3, 4, 4).contiguous()
    valid = torch.ones(1, 4, 4, dtype=torch.bool)
    out = csl_weights(probs, valid, select=select, **form)
    assert out.reliable_cluster.tolist() == [0]
    assert (out.cluster == 0).all() and (out.weights == 1).all()


def test_flat_steps_match_the_blocked_ones_on_a_large_batch():
    # several default-size blocks in the blocked form, one array in the flat form: the same values to rounding
    probs = random_probs(2, 21, 181, 190, seed=4)
    valid = torch.rand(2, 181, 190, generator=torch.Generator().manual_seed(4)) < 0.9
    flat = probs.view(2, 21, -1)
    mask = valid.view(2, -1)
    blocked = csl_selection._steps(flat, mask, 2.0, 1.0, "mean_conf", 0.25, fused=False)
    fused = csl_selection._steps(flat, mask, 2.0, 1.0, "mean_conf", 0.25, fused=True)
    for name, a, b in zip(CSLSelection._fields, blocked, fused):
        if a.is_floating_point():
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
        else:
            assert (a != b).float().mean().item() < 1e-4, name  # a pixel on a boundary may flip
    assert torch.equal(blocked[7], fused[7])


def test_a_compiler_that_cannot_build_is_one_line_naming_the_key(monkeypatch):
    from torch._inductor.exc import InvalidCxxCompiler

    failure = {"error": InvalidCxxCompiler()}

    def compile_that_fails(function):
        def call(*args, **kwargs):
            raise failure["error"]
        return call

    monkeypatch.setattr(csl_selection, "_compiled", None)
    monkeypatch.setattr(torch, "compile", compile_that_fails)
    probs, valid = random_probs(1, 3, 4, 4, seed=0), torch.ones(1, 4, 4, dtype=torch.bool)
    with pytest.raises(SemisegError) as raised:
        csl_weights(probs, valid, compiled=True)
    message = str(raised.value)
    assert "\n" not in message and message.startswith("method.csl_compile: torch.compile could not build")
    assert "No working C++ compiler" in message and message.endswith("set method.csl_compile=false")
    # an error of the computation itself is not called a compiler problem
    failure["error"] = RuntimeError("out of memory")
    with pytest.raises(RuntimeError, match="out of memory"):
        csl_weights(probs, valid, compiled=True)
