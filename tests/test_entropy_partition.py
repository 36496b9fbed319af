"""U2PL's entropy schedule, entropy, percentile and reliable/unreliable masks against hand computations and numpy
(docs/methods/u2pl.md)."""

import math

import numpy as np
import pytest
import torch

from semiseg.components.entropy_partition import (
    contrastive_partition,
    drop_percent,
    loss_keep_mask,
    percentile,
    pixel_entropy,
    reliable_partition,
)


# --- drop schedule ---------------------------------------------------------------------------------------------


def test_drop_percent_schedule():
    assert drop_percent(0, 100) == pytest.approx(20.0)  # t/T = 0
    assert drop_percent(50, 100) == pytest.approx(10.0)  # t/T = 0.5
    assert drop_percent(100, 100) == pytest.approx(0.0)  # t/T = 1
    assert drop_percent(150, 100) == 0.0  # past the end: nothing dropped, never negative
    assert drop_percent(25, 100, alpha0=40.0) == pytest.approx(30.0)
    with pytest.raises(ValueError):
        drop_percent(0, 0)
    with pytest.raises(ValueError):
        drop_percent(-1, 10)


# --- entropy ---------------------------------------------------------------------------------------------------


def test_pixel_entropy_hand_values():
    probs = torch.tensor([[0.5, 1.0, 0.2], [0.5, 0.0, 0.3], [0.0, 0.0, 0.5]]).reshape(1, 3, 1, 3)
    h = pixel_entropy(probs)
    assert h.shape == (1, 1, 3) and h.dtype == torch.float32
    assert h[0, 0, 0].item() == pytest.approx(math.log(2))  # [0.5, 0.5, 0]: 0·log 0 = 0
    assert h[0, 0, 1].item() == 0.0  # one-hot: exactly 0, not NaN
    expected = -(0.2 * math.log(0.2) + 0.3 * math.log(0.3) + 0.5 * math.log(0.5))
    assert h[0, 0, 2].item() == pytest.approx(expected, rel=1e-6)


def test_pixel_entropy_is_fp32_for_half_inputs():
    probs = torch.full((2, 4, 3, 3), 0.25, dtype=torch.bfloat16)
    h = pixel_entropy(probs)
    assert h.dtype == torch.float32
    assert torch.allclose(h, torch.full((2, 3, 3), math.log(4)))


# --- percentile ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 7, 1000])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("q", [0.0, 12.5, 50.0, 80.0, 100.0])
def test_percentile_matches_numpy(size, ties, q):
    generator = torch.Generator().manual_seed(size)
    values = torch.rand(size, generator=generator)
    if ties:
        values = torch.floor(values * 4) / 4  # few distinct values, many repeats
    got = percentile(values, q)
    assert got.dtype == values.dtype and got.dim() == 0
    np.testing.assert_allclose(got.item(), np.percentile(values.numpy(), q), rtol=1e-6, atol=1e-7)


def test_percentile_float64_and_unsorted_input():
    values = torch.tensor([3.0, -1.0, 2.0, 10.0], dtype=torch.float64)
    # sorted: -1, 2, 3, 10; q = 50: virtual index 1.5 -> 2 + 0.5·(3 − 2) = 2.5
    assert percentile(values, 50.0).item() == 2.5
    np.testing.assert_allclose(percentile(values, 30.0).item(), np.percentile(values.numpy(), 30.0), rtol=1e-12)


def test_percentile_errors():
    with pytest.raises(ValueError, match="empty"):
        percentile(torch.empty(0), 50.0)
    with pytest.raises(ValueError):
        percentile(torch.ones(3), 101.0)
    with pytest.raises(ValueError):
        percentile(torch.ones(3), -1.0)
    with pytest.raises(ValueError):
        percentile(torch.ones(2, 2), 50.0)


# --- masks -----------------------------------------------------------------------------------------------------


def hand_map():
    """A 1x1x2x5 entropy map; the last two pixels are ignored (padding) and hold large entropies."""
    entropy = torch.tensor([[[[0.0, 0.1, 0.2, 0.3, 0.4],
                              [0.5, 0.6, 0.7, 9.0, 9.0]]]])
    valid = torch.ones_like(entropy, dtype=torch.bool)
    valid[..., 1, 3:] = False
    return entropy, valid


def mask_of(*rows):
    return torch.tensor([[list(rows[0]), list(rows[1])]], dtype=torch.bool).reshape(1, 1, 2, 5)


def test_masks_on_hand_map_alpha_20():
    entropy, valid = hand_map()
    part = reliable_partition(entropy, valid, 20.0)
    # 8 valid values 0.0 … 0.7.
    # P_20: virtual index 7·0.2 = 1.4 -> 0.1 + 0.4·(0.2 − 0.1) = 0.14
    # γ = P_80: virtual index 7·0.8 = 5.6 -> 0.5 + 0.6·(0.6 − 0.5) = 0.56
    assert part.low_threshold.item() == pytest.approx(0.14)
    assert part.high_threshold.item() == pytest.approx(0.56)
    # keep: H < 0.56 -> 0.0 … 0.5 (the 0.6 and 0.7 pixels dropped; the ignored ones never kept)
    assert torch.equal(part.keep, mask_of([1, 1, 1, 1, 1], [1, 0, 0, 0, 0]))
    # reliable: H ≤ 0.14 -> 0.0, 0.1
    assert torch.equal(part.reliable, mask_of([1, 1, 0, 0, 0], [0, 0, 0, 0, 0]))
    # unreliable: H ≥ 0.56 -> 0.6, 0.7 (not the ignored 9.0 pixels)
    assert torch.equal(part.unreliable, mask_of([0, 0, 0, 0, 0], [0, 1, 1, 0, 0]))
    assert torch.equal(loss_keep_mask(entropy, valid, 20.0), part.keep)
    reliable, unreliable = contrastive_partition(entropy, valid, 20.0)
    assert torch.equal(reliable, part.reliable) and torch.equal(unreliable, part.unreliable)


def test_alpha_zero_keeps_every_valid_pixel():
    entropy, valid = hand_map()
    part = reliable_partition(entropy, valid, 0.0)
    assert torch.equal(part.keep, valid)  # literal H < max H would drop the 0.7 pixel
    # the contrastive sets keep their inclusive inequalities: the minimum and the maximum
    assert torch.equal(part.reliable, mask_of([1, 0, 0, 0, 0], [0, 0, 0, 0, 0]))
    assert torch.equal(part.unreliable, mask_of([0, 0, 0, 0, 0], [0, 0, 1, 0, 0]))
    # all entropies tied: α = 0 still keeps everything ...
    tied = torch.full((1, 1, 2, 5), 0.3)
    assert torch.equal(loss_keep_mask(tied, valid, 0.0), valid)
    # ... while for α > 0 the strict inequality drops every pixel tied at γ (documented)
    assert not loss_keep_mask(tied, valid, 10.0).any()


def test_masks_ignore_invalid_pixels():
    entropy, valid = hand_map()
    reference = reliable_partition(entropy, valid, 20.0)
    for filler in (-5.0, 0.35, 1e6, math.nan):
        changed = entropy.clone()
        changed[~valid] = filler
        part = reliable_partition(changed, valid, 20.0)
        for name in ("keep", "reliable", "unreliable"):
            assert torch.equal(getattr(part, name), getattr(reference, name)), (filler, name)
            assert not (getattr(part, name) & ~valid).any()
        assert part.low_threshold.item() == reference.low_threshold.item()
        assert part.high_threshold.item() == reference.high_threshold.item()
    # a 0/1 float validity mask works like the bool one
    assert torch.equal(reliable_partition(entropy, valid.float(), 20.0).keep, reference.keep)


def test_no_valid_pixel_gives_empty_masks():
    entropy, valid = hand_map()
    part = reliable_partition(entropy, torch.zeros_like(valid), 20.0)
    assert not part.keep.any() and not part.reliable.any() and not part.unreliable.any()
    assert math.isnan(part.low_threshold.item()) and math.isnan(part.high_threshold.item())
    empty = reliable_partition(torch.empty(0, 4, 4), torch.empty(0, 4, 4, dtype=torch.bool), 20.0)
    assert empty.keep.shape == (0, 4, 4) and not empty.unreliable.any()


def test_thresholds_match_numpy_on_random_map():
    generator = torch.Generator().manual_seed(3)
    probs = torch.rand(2, 5, 9, 11, generator=generator).softmax(dim=1)
    entropy = pixel_entropy(probs)
    valid = torch.rand(2, 9, 11, generator=generator) > 0.3
    alpha = 13.7
    part = reliable_partition(entropy, valid, alpha)
    values = entropy[valid].numpy()
    low, high = np.percentile(values, alpha), np.percentile(values, 100 - alpha)
    np.testing.assert_allclose(part.low_threshold.item(), low, rtol=1e-6)
    np.testing.assert_allclose(part.high_threshold.item(), high, rtol=1e-6)
    h, v = entropy.numpy(), valid.numpy()
    assert np.array_equal(part.keep.numpy(), v & (h < high))
    assert np.array_equal(part.reliable.numpy(), v & (h <= low))
    assert np.array_equal(part.unreliable.numpy(), v & (h >= high))
    # with α > 0 the unreliable pixels are exactly the valid ones the loss drops
    assert torch.equal(part.unreliable, valid & ~part.keep)


def test_alpha_out_of_range_and_shape_mismatch_raise():
    entropy, valid = hand_map()
    with pytest.raises(ValueError):
        reliable_partition(entropy, valid, -1.0)
    with pytest.raises(ValueError):
        reliable_partition(entropy, valid, 120.0)
    with pytest.raises(ValueError):
        reliable_partition(entropy, valid[..., :4], 20.0)


def test_population_sets_the_thresholds():
    """Percentiles over another population (the gathered global batch): thresholds from it, masks on the local map."""
    entropy = torch.tensor([[[0.1, 0.5, 0.9, 1.3]]])
    valid = torch.ones_like(entropy, dtype=torch.bool)
    population = torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    part = reliable_partition(entropy, valid, 20.0, population=population)
    assert part.low_threshold.item() == pytest.approx(float(np.percentile(population.numpy(), 20)))
    assert part.high_threshold.item() == pytest.approx(float(np.percentile(population.numpy(), 80)))
    # P_20 = 0.2, P_80 = 0.8: keep H < 0.8, reliable H <= 0.2, unreliable H >= 0.8
    assert part.keep.tolist() == [[[True, True, False, False]]]
    assert part.reliable.tolist() == [[[True, False, False, False]]]
    assert part.unreliable.tolist() == [[[False, False, True, True]]]
    # the population of the local valid pixels gives the default result
    default = reliable_partition(entropy, valid, 20.0)
    same = reliable_partition(entropy, valid, 20.0, population=entropy[valid])
    assert all(torch.equal(a, b) for a, b in zip(default, same))
