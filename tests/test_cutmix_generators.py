"""G2 (CPS 3-box) and G3 (U2PL half-area) CutMix masks (docs/method_interface.md, Box generators)."""

import numpy as np
import pytest
import torch

from semiseg.components.cutmix import cps_box_mask, u2pl_half_box


def test_cps_mask_covered_fraction_matches_the_released_generator():
    # measured on the released generator, the covered fraction averages about 25 %,
    # 5th-95th percentile about 15-37 % (overlaps toggle back), not 25-50 %.
    torch.manual_seed(0)
    fractions = np.array([cps_box_mask(64, 64).float().mean().item() for _ in range(2000)])
    assert 0.23 < fractions.mean() < 0.27
    assert 0.12 < np.percentile(fractions, 5) < 0.18
    assert 0.34 < np.percentile(fractions, 95) < 0.40


def test_cps_mask_overlaps_toggle_back():
    # one box pasted twice at the same place returns to zero: draw the same box twice by reseeding
    torch.manual_seed(3)
    one = cps_box_mask(32, 48, n_boxes=1)
    assert one.any() and one.dtype == torch.bool and one.shape == (32, 48)
    torch.manual_seed(3)
    a = cps_box_mask(32, 48, n_boxes=1)
    torch.manual_seed(3)
    b = cps_box_mask(32, 48, n_boxes=1)
    assert torch.equal(a ^ b, torch.zeros_like(a))
    # a single box is a filled rectangle with side ≈ √(a/1)·(y_prop, x_prop) inside the image
    rows, cols = one.any(1).nonzero().flatten(), one.any(0).nonzero().flatten()
    assert one[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()
    assert 0.25 * 32 * 48 * 0.8 <= int(one.sum()) <= 0.5 * 32 * 48 * 1.2


def test_cps_mask_pixels_under_two_boxes_return_to_zero():
    # two boxes of proportion ≈ 1 scaled by √(1/2): each is ≈ 0.707 H x 0.707 W, so both always cover the
    # centre; with the toggle rule the centre is 0 (an OR of the boxes would give 1)
    torch.manual_seed(1)
    nonempty = 0
    for _ in range(100):
        mask = cps_box_mask(64, 64, n_boxes=2, prop_range=(0.999, 1.0))
        assert not mask[32, 32]
        nonempty += bool(mask.any())  # empty only when the two boxes land on the same place
    assert nonempty > 80


def test_u2pl_box_is_half_the_area_inside_the_image():
    torch.manual_seed(0)
    h, w = 40, 60
    widths = set()
    for _ in range(500):
        box = u2pl_half_box(h, w)
        rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
        bh, bw = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
        assert int(box.sum()) == bh * bw  # a filled rectangle
        assert w // 2 + 1 <= bw <= w - 1
        assert bh == round(h * w / (2 * bw))
        assert abs(bh * bw - h * w / 2) <= bw / 2 + 1
        widths.add(bw)
    assert min(widths) == w // 2 + 1 and max(widths) == w - 1


def test_u2pl_box_rejects_tiny_width():
    with pytest.raises(ValueError):
        u2pl_half_box(4, 2)
