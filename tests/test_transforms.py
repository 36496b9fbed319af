"""Weak pipelines W-U / W-C and the strong photometric view (docs/datasets.md): padding is ignored and
invalid exactly, and a crop never exposes padding when the image covers it."""

import numpy as np
import pytest
import torch

from semiseg.data.transforms import (
    StrongPhotometric,
    WeakCPS,
    WeakU2PL,
    WeakUniMatch,
    blur_kernel_size,
    build_weak,
)
from semiseg.errors import SemisegError

PIPELINES = {
    "wu_fixed": lambda crop: WeakUniMatch(crop, scale_range=(1.0, 1.0)),
    "wc_fixed": lambda crop: WeakCPS(crop, scales=(1.0,)),
    "wp_fixed": lambda crop: WeakU2PL(crop, scale_range=(1.0, 1.0)),
}


def _coord_image(h, w):
    """Channel 0 = row, channel 1 = column, channel 2 = 7: every pixel knows where it came from."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.arange(h)[:, None]
    img[..., 1] = np.arange(w)[None, :]
    img[..., 2] = 7
    return img


@pytest.mark.parametrize("kind", sorted(PIPELINES))
def test_padding_is_ignore_and_invalid_exactly(kind):
    h, w, crop = 10, 14, 32
    img = _coord_image(h, w)
    mask = ((np.arange(h)[:, None] + np.arange(w)[None, :]) % 5).astype(np.uint8)  # no 255 inside
    flips = set()
    for seed in range(12):
        torch.manual_seed(seed)
        v = PIPELINES[kind](crop)(img, mask)
        assert v.image.shape == (3, crop, crop) and v.image.dtype == torch.uint8
        assert v.mask.shape == (crop, crop) and v.mask.dtype == torch.long
        assert v.valid.shape == (crop, crop) and v.valid.dtype == torch.bool
        first_col = int(v.valid[0].float().argmax())
        flipped = int(v.image[1, 0, first_col]) != 0  # channel 1 = input column
        flips.add(flipped)
        # W-U flips after padding (padding moves left); W-C flips before resizing and padding.
        cols = slice(crop - w, crop) if flipped and kind == "wu_fixed" else slice(0, w)
        expect_valid = torch.zeros(crop, crop, dtype=torch.bool)
        expect_valid[:h, cols] = True
        assert torch.equal(v.valid, expect_valid)
        assert (v.mask[~v.valid] == 255).all() and (v.image[:, ~v.valid] == 0).all()
        inner_mask = torch.from_numpy(mask).long()
        inner_img = torch.from_numpy(img).permute(2, 0, 1)
        if flipped:
            inner_mask, inner_img = inner_mask.flip(-1), inner_img.flip(-1)
        assert torch.equal(v.mask[:h, cols], inner_mask)
        assert torch.equal(v.image[:, :h, cols], inner_img)
    assert flips == {True, False}


@pytest.mark.parametrize("kind", sorted(PIPELINES))
def test_no_padding_when_image_covers_crop(kind):
    # h = S + 1: the offset must be 0 or 1 (never S - h + 1 = 2, which would expose a padded row).
    h, w, crop = 33, 40, 32
    img = _coord_image(h, w)
    mask = np.full((h, w), 3, np.uint8)
    offsets = set()
    for seed in range(40):
        torch.manual_seed(seed)
        v = PIPELINES[kind](crop)(img, mask)
        assert v.valid.all() and (v.mask == 3).all()
        rows = v.image[0, :, 0].long()
        assert torch.equal(rows, rows[0] + torch.arange(crop))  # a contiguous window of the input
        offsets.add(int(rows[0]))
    assert offsets == {0, 1}


def test_unimatch_long_side_range_hits_both_ends():
    h, w, crop = 6, 8, 20  # L = 8: L' in [4, 16]; crop >= 2L so the valid region is the resized image
    t = WeakUniMatch(crop)
    img = np.full((h, w, 3), 100, np.uint8)
    torch.manual_seed(0)
    longs = []
    for _ in range(300):
        v = t(img, None)
        assert v.mask is None
        nh, nw = int(v.valid.any(1).sum()), int(v.valid.any(0).sum())
        assert int(v.valid.sum()) == nh * nw
        assert nh == int(h * nw / w + 0.5)
        longs.append(nw)
    assert min(longs) == 4 and max(longs) == 16
    assert set(longs) == set(range(4, 17))


@pytest.mark.parametrize("name", ["unimatch", "cps"])
def test_resized_mask_values_are_input_values(name):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (23, 31, 3), dtype=np.uint8)
    mask = rng.choice(np.array([1, 3, 7], np.uint8), size=(23, 31))
    t = build_weak(name, 24)
    for seed in range(10):
        torch.manual_seed(seed)
        v = t(img, mask)
        assert set(v.mask[v.valid].unique().tolist()) <= {1, 3, 7}
        assert (v.mask[~v.valid] == 255).all()


@pytest.mark.parametrize("name", ["unimatch", "cps"])
def test_image_and_mask_stay_aligned(name):
    # Left third is class 1, the rest class 2; image channel 0 = 100 * class. A flip applied to only one of
    # them would disagree on about a third of the pixels; bilinear blur may only touch the boundary.
    h, w = 30, 45
    mask = np.full((h, w), 2, np.uint8)
    mask[:, :15] = 1
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = mask * 100
    img[..., 1] = np.arange(w)[None, :]
    t = build_weak(name, 24)
    for seed in range(16):
        torch.manual_seed(seed)
        v = t(img, mask)
        from_image = (v.image[0].float() / 100).round().long()
        agree = (from_image == v.mask)[v.valid].float().mean()
        assert agree > 0.9


@pytest.mark.parametrize("name", ["unimatch", "cps"])
def test_same_seed_same_output(name):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (20, 27, 3), dtype=np.uint8)
    mask = rng.integers(0, 4, (20, 27), dtype=np.uint8)
    t = build_weak(name, 16)
    torch.manual_seed(5)
    a = [t(img, mask) for _ in range(3)]
    torch.manual_seed(5)
    b = [t(img, mask) for _ in range(3)]
    for x, y in zip(a, b):
        assert torch.equal(x.image, y.image) and torch.equal(x.mask, y.mask) and torch.equal(x.valid, y.valid)
    assert not all(torch.equal(a[0].image, x.image) for x in a[1:])


def test_cps_scale_set_and_size_rule():
    # image 10 x 14, crop 40 >= 2 * 14: the valid region is (int(10 s), int(14 s)) for s in the set.
    img = np.full((10, 14, 3), 50, np.uint8)
    t = WeakCPS(40)
    torch.manual_seed(0)
    sizes = set()
    for _ in range(80):
        v = t(img, None)
        sizes.add((int(v.valid.any(1).sum()), int(v.valid.any(0).sum())))
    assert sizes == {(int(10 * s), int(14 * s)) for s in (0.5, 0.75, 1.0, 1.5, 1.75, 2.0)}


def test_u2pl_scale_halves_and_size_rule():
    # image 10 x 20, crop 48 >= 2 * 20: the valid region is (int(10 s), int(20 s)); half the draws shrink
    img = np.full((10, 20, 3), 50, np.uint8)
    t = WeakU2PL(48)
    torch.manual_seed(0)
    widths = []
    for _ in range(400):
        v = t(img, None)
        rows, cols = int(v.valid.any(1).sum()), int(v.valid.any(0).sum())
        assert abs(rows - cols / 2) <= 1  # (int(10 s), int(20 s)): one scale for both sides
        widths.append(cols)
    below = sum(w < 20 for w in widths) / len(widths)
    assert 0.4 < below < 0.6 and min(widths) >= 10 and max(widths) <= 40
    assert len(set(widths)) > 15  # a continuous scale, not a set


def test_build_weak_names_and_errors():
    assert isinstance(build_weak("unimatch", 8, (0.5, 2.0)), WeakUniMatch)
    cps = build_weak("cps", 8, (0.6, 1.6))
    assert isinstance(cps, WeakCPS) and cps.scales == (0.75, 1.0, 1.5)
    assert isinstance(build_weak("u2pl", 8, (0.5, 2.0)), WeakU2PL)
    with pytest.raises(SemisegError, match="unimatch, cps, u2pl"):
        build_weak("pseco", 8, (0.5, 2.0))
    with pytest.raises(SemisegError, match="0 < lo <= 1 <= hi"):
        WeakU2PL(8, (1.2, 2.0))
    with pytest.raises(SemisegError):
        WeakUniMatch(8, (2.0, 1.0))


def test_strong_identity_when_all_probabilities_zero():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    s = StrongPhotometric(p_jitter=0, p_gray=0, p_blur=0)
    assert torch.equal(s(x), x)


def test_strong_shape_dtype_determinism_and_effects():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    s = StrongPhotometric()
    torch.manual_seed(3)
    a = [s(x) for _ in range(4)]
    torch.manual_seed(3)
    b = [s(x) for _ in range(4)]
    for y, z in zip(a, b):
        assert y.shape == x.shape and y.dtype == torch.uint8 and torch.equal(y, z)
    assert any(not torch.equal(y, x) for y in a)
    gray = StrongPhotometric(p_jitter=0, p_gray=1, p_blur=0)(x)
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    flat = torch.full((3, 5, 5), 90, dtype=torch.uint8)  # blur of a constant image is the image (tiny crop: capped kernel)
    assert torch.equal(StrongPhotometric(p_jitter=0, p_gray=0, p_blur=1)(flat), flat)


def test_blur_kernel_covers_three_sigma():
    assert blur_kernel_size(0.1) == 3
    assert blur_kernel_size(2.0) == 13
    assert blur_kernel_size(1.01) == 9
    assert blur_kernel_size(2.0, max_side=5) == 9
