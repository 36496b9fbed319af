"""Trusted Mask Perturbation (design: methods.md §8.4; docs/method_interface.md, Views: the alternative view).

- `block_cover`: the cell structure (G = round(S / block), pixel (r, c) in cell (⌊r·G/S⌋, ⌊c·G/S⌋)) and the
  cover ratio;
- `TrustedMaskView`: the TMP probability, photometric only (no grayscale), no box; the standard view and its
  box otherwise; pickles for the loader workers;
- `UnlabeledDataset` / the engine with the view: `cover` in every sample and batch, reproducible from the
  sample's seed and the same for one process or two;
- `trusted_region` and `apply_trusted_mask` (`zero` and `partner` fills);
- `Views` validation of an alternative.
"""

import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from semiseg.components.cutmix import UniMatchBox
from semiseg.components.trusted_mask import (TrustedMaskView, apply_trusted_mask, block_cover, cells_per_side,
                                             trusted_region)
from semiseg.data.sample import Sample
from semiseg.data.sampling import SeededItems
from semiseg.data.transforms import StrongPhotometric, WeakUniMatch
from semiseg.data.views import StrongReplacement, UnlabeledDataset
from semiseg.errors import SemisegError
from semiseg.methods.interface import Views

S = 32


class ArraySource:
    num_classes = 4

    def __init__(self, n=6, h=28, w=40):
        rng = np.random.default_rng(0)
        self.images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]

    def __len__(self):
        return len(self.images)

    def load(self, i):
        return Sample(self.images[i], None, f"img{i}")


def _image(size=S, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g)


# -- the block cover mask ---------------------------------------------------------------------------

@pytest.mark.parametrize("size, cells", [(321, 10), (801, 25), (513, 16), (20, 1), (8, 1)])
def test_cells_per_side(size, cells):
    assert cells_per_side(size, 32) == cells


@pytest.mark.parametrize("size", [321, 801, 64, 50])
def test_cover_cells_are_constant_and_follow_the_floor_rule(size):
    g = cells_per_side(size, 32)
    torch.manual_seed(size)
    cover = block_cover(size, size, 32, 0.5)
    torch.manual_seed(size)
    cells = torch.rand(g, g) < 0.5  # one draw of G x G cells
    assert cover.shape == (size, size) and cover.dtype == torch.bool
    for r in range(0, size, 7):
        for c in range(0, size, 5):
            assert cover[r, c] == cells[r * g // size, c * g // size]
    # each cell is a constant block, and the blocks tile the crop with sizes ⌊S/G⌋ or ⌈S/G⌉
    bounds = [next(r for r in range(size) if r * g // size == i) for i in range(g)] + [size]
    sizes = np.diff(bounds)
    assert set(sizes) <= {size // g, -(-size // g)}
    for i in range(g):
        for j in range(g):
            block = cover[bounds[i]:bounds[i + 1], bounds[j]:bounds[j + 1]]
            assert block.all() or not block.any()


def test_cover_ratio_over_many_draws():
    torch.manual_seed(0)
    covered = torch.stack([block_cover(64, 64, 8, 0.7) for _ in range(200)]).float().mean().item()
    assert abs(covered - 0.7) < 0.02
    assert block_cover(64, 64, 8, 1.0).all() and not block_cover(64, 64, 8, 0.0).any()


# -- the TMP view -----------------------------------------------------------------------------------

def test_tmp_probability_and_no_box():
    view = TrustedMaskView(block_size=8)
    image = _image(16)
    torch.manual_seed(0)
    results = [view(image) for _ in range(1000)]
    tmp = [r for r in results if r is not None]
    assert abs(len(tmp) / len(results) - 0.5) < 0.05
    for r in tmp[:50]:
        assert isinstance(r, StrongReplacement)
        assert r.image.dtype == torch.uint8 and r.image.shape == (3, 16, 16)
        assert r.box.dtype == torch.bool and r.box.shape == (16, 16) and not r.box.any()
        assert r.cover.dtype == torch.bool and r.cover.shape == (16, 16)


def test_tmp_draws_coin_then_photometric_then_cover():
    view = TrustedMaskView(prob=1.0, block_size=4)
    image = _image(S)
    for seed in range(5):
        torch.manual_seed(seed)
        got = view(image)
        torch.manual_seed(seed)
        torch.rand(())  # the coin
        photometric = StrongPhotometric(p_jitter=0.8, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.2,
                                        p_gray=0.0, p_blur=0.5, blur_sigma=(0.1, 2.0))
        expected = photometric(image)
        cover = block_cover(S, S, 4, 0.7)
        assert torch.equal(got.image, expected) and torch.equal(got.cover, cover)


def test_tmp_view_is_photometric_only_without_grayscale():
    # jitter and blur off: a view with grayscale (p = 0.2) would change some images; TMP leaves all unchanged
    view = TrustedMaskView(prob=1.0, p_jitter=0.0, p_blur=0.0)
    image = _image(S)
    torch.manual_seed(0)
    assert all(torch.equal(view(image).image, image) for _ in range(50))
    assert TrustedMaskView(prob=0.0)(image) is None


def test_tmp_view_pickles_and_validates():
    view = TrustedMaskView(prob=1.0, block_size=8, cover_ratio=0.3)
    clone = pickle.loads(pickle.dumps(view))
    assert clone == view
    image = _image(S)
    torch.manual_seed(3)
    a = view(image)
    torch.manual_seed(3)
    b = clone(image)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    for kwargs in (dict(prob=1.5), dict(cover_ratio=-0.1), dict(block_size=0), dict(blur_sigma=(2.0, 0.1))):
        with pytest.raises(ValueError):
            TrustedMaskView(**kwargs)


# -- in the data pipeline ---------------------------------------------------------------------------

def _dataset(**view_kwargs):
    return UnlabeledDataset(ArraySource(), WeakUniMatch(S), num_strong=2, box=UniMatchBox(p=1.0), num_boxes=2,
                            alternative=TrustedMaskView(block_size=8, **view_kwargs))


def test_dataset_tmp_view_or_standard_view_with_its_box():
    ds = _dataset(cover_ratio=1.0)  # a TMP view is fully covered, a standard one has cover all False
    tmp = standard = 0
    for i in range(len(ds)):
        for seed in range(6):
            item = SeededItems(ds)[(i, seed)]
            assert set(item) == {"image_w", "image_s", "box", "valid", "index", "cover"}
            assert item["cover"].shape == (S, S) and item["cover"].dtype == torch.bool
            assert item["box"][0].any()  # the first strong view is never replaced
            if item["cover"].any():
                tmp += 1
                assert item["cover"].all() and not item["box"][1].any()
            else:
                standard += 1
                assert item["box"][1].any()  # the standard view keeps its G1 box (p = 1 here)
    assert tmp >= 5 and standard >= 5


def test_dataset_reproducible_from_the_sample_seed():
    items = SeededItems(_dataset())
    order = [(0, 11), (3, 12), (5, 13), (0, 14)]
    first = [items[k] for k in order]
    again = [items[k] for k in reversed(order)][::-1]  # other order: every sample depends on its seed only
    for a, b in zip(first, again):
        assert all(torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])) for k in a)
    assert not torch.equal(first[0]["image_s"], first[3]["image_s"])  # another seed, another draw


def test_engine_batches_hold_cover_and_split_over_processes():
    from engine_runs import TINY_RUN

    from semiseg.config import load_config
    from semiseg.engine.batch_plan import plan_from_config
    from semiseg.engine.build import build_preset, build_train_batches

    cfg = load_config(TINY_RUN[0], [a for a in TINY_RUN[1:] if not a.startswith("--")] + ["train.total_iters=2"])
    preset = build_preset(cfg)
    splits = preset.build(cfg.data)
    views = Views(unlabeled=True, strong=2, box=UniMatchBox(), alternative=TrustedMaskView(block_size=8))
    method = SimpleNamespace(views=lambda: views)

    def steps(world_size, rank):
        stream = build_train_batches(cfg, preset, splits, method, 0, plan_from_config(cfg.train, world_size), rank)
        return [passes[0]["unlabeled"] for passes in stream]

    one = steps(1, 0)
    two = [steps(2, rank) for rank in range(2)]
    b_u = cfg.train.unlabeled_batch_size
    for t, batch in enumerate(one):
        assert batch["cover"].shape == (b_u, 32, 32) and batch["cover"].dtype == torch.bool
        for key in ("image_s", "box", "cover"):
            assert torch.equal(batch[key], torch.cat([two[0][t][key], two[1][t][key]])), key
    covered = torch.cat([b["cover"].flatten(1).any(1) for b in one])
    assert covered.any() and not covered.all()  # some TMP views and some standard ones (p = 0.5, 16 samples)


# -- the region and the fills -----------------------------------------------------------------------

def _masks(b=3, size=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(b, size, size, generator=g) < 0.5 for _ in range(3)]


def test_trusted_region_only_reliable_valid_covered_pixels():
    cover, reliable, valid = _masks()
    region = trusted_region(cover, reliable, valid)
    assert region.dtype == torch.bool and torch.equal(region, cover & reliable & valid)
    assert torch.equal(trusted_region(cover, reliable, valid.long()), region)  # a 0/1 validity works too
    assert not trusted_region(cover, torch.zeros_like(reliable), valid).any()
    assert not trusted_region(cover, reliable, torch.zeros_like(valid)).any()
    with pytest.raises(ValueError, match="bool"):
        trusted_region(cover, reliable.float(), valid)  # weights, not the reliable mask
    with pytest.raises(ValueError, match="B, S, S"):
        trusted_region(cover, reliable[:2], valid)


def test_zero_fill_zeroes_exactly_the_region():
    region = _masks(seed=1)[0]
    x = torch.randn(3, 3, 12, 12)
    labels, weights = torch.randint(0, 5, (3, 12, 12)), torch.rand(3, 12, 12)
    before = x.clone()
    out, targets = apply_trusted_mask(x, region, "zero", targets=(labels, weights))
    r = region.unsqueeze(1).expand_as(x)
    assert (out[r] == 0).all() and torch.equal(out[~r], x[~r])
    assert torch.equal(x, before)  # not in place
    assert targets[0] is labels and targets[1] is weights
    assert apply_trusted_mask(x, region)[1] is None


def test_partner_fill_pastes_exactly_the_region_and_its_targets():
    region = _masks(seed=2)[0]
    x, partner_x = torch.randn(3, 3, 12, 12), torch.randn(3, 3, 12, 12)
    own = (torch.randint(0, 5, (3, 12, 12)), torch.rand(3, 12, 12), torch.rand(3, 12, 12) < 0.8)
    theirs = (torch.randint(0, 5, (3, 12, 12)), torch.rand(3, 12, 12), torch.rand(3, 12, 12) < 0.8)
    out, targets = apply_trusted_mask(x, region, "partner", partner_x=partner_x, targets=own, partner_targets=theirs)
    r = region.unsqueeze(1).expand_as(x)
    assert torch.equal(out[r], partner_x[r]) and torch.equal(out[~r], x[~r])
    for mixed, mine, other in zip(targets, own, theirs):
        assert mixed.dtype == mine.dtype
        assert torch.equal(mixed[region], other[region]) and torch.equal(mixed[~region], mine[~region])
    with pytest.raises(ValueError, match="partner_x"):
        apply_trusted_mask(x, region, "partner")
    with pytest.raises(ValueError, match="partner target"):
        apply_trusted_mask(x, region, "partner", partner_x=partner_x, targets=own)
    with pytest.raises(ValueError, match="fill"):
        apply_trusted_mask(x, region, "mean")


# -- Views ------------------------------------------------------------------------------------------

def test_views_with_an_alternative():
    view, box = TrustedMaskView(), UniMatchBox()
    assert Views(unlabeled=True, strong=2, box=box, alternative=view).alternative_index == 1
    assert Views(unlabeled=True, strong=1, box=box, alternative=view, alternative_index=0).num_boxes == 1


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(strong=1), "strong >= 2"),
    (dict(strong=2, box=None), "box generator"),
    (dict(strong=2, boxes=1), "at least 2 boxes"),
    (dict(strong=2, alternative_index=-1), ">= 0"),
    (dict(strong=2, alternative_index=2), "strong >= 3"),
])
def test_views_alternative_validation(kwargs, fragment):
    args = dict(unlabeled=True, box=UniMatchBox(), alternative=TrustedMaskView())
    args.update(kwargs)
    with pytest.raises(ValueError, match=fragment):
        Views(**args)


def test_dataset_alternative_validation():
    with pytest.raises(SemisegError, match="num_strong and num_boxes > 1"):
        UnlabeledDataset(ArraySource(), WeakUniMatch(S), num_strong=1, box=UniMatchBox(), num_boxes=1,
                         alternative=TrustedMaskView())
