"""Labeled / unlabeled view datasets (docs/datasets.md, docs/method_interface.md: Views); unlabeled masks
are never read, validity comes from the crop geometry; an alternative view replaces one strong view and its box."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from semiseg.components.cutmix import HalfAreaBox, ToggledBoxes, UniMatchBox
from semiseg.data.normalize import normalize
from semiseg.data.sample import Sample
from semiseg.data.transforms import StrongPhotometric, WeakCPS, WeakUniMatch
from semiseg.data.views import LabeledDataset, StrongReplacement, UnlabeledDataset
from semiseg.errors import SemisegError

S = 16


class ArraySource:
    num_classes = 4

    def __init__(self, n=3, h=12, w=20, with_masks=True, mask_value=None):
        rng = np.random.default_rng(0)
        self.images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]
        self.masks = [rng.integers(0, 4, (h, w), dtype=np.uint8) for _ in range(n)]
        if mask_value is not None:
            self.masks = [np.full((h, w), mask_value, np.uint8) for _ in range(n)]
        self.with_masks = with_masks

    def __len__(self):
        return len(self.images)

    def name(self, i):
        return f"img{i}"

    def load(self, i):
        return Sample(self.images[i], self.masks[i] if self.with_masks else None, self.name(i))


class UnlabeledListSource:
    """Like an unlabeled list whose mask column names files that do not exist: masks are never opened."""

    num_classes = 4

    def __init__(self, tmp_path, n=2):
        rng = np.random.default_rng(1)
        self.paths = []
        for i in range(n):
            path = tmp_path / f"u{i}.npy"
            np.save(path, rng.integers(0, 256, (9, 13, 3), dtype=np.uint8))
            self.paths.append((path, tmp_path / "missing" / f"u{i}.png"))

    def __len__(self):
        return len(self.paths)

    def name(self, i):
        return str(self.paths[i][0])

    def load(self, i):
        image_path, mask_path = self.paths[i]
        assert not mask_path.exists()
        return Sample(np.load(image_path), None, self.name(i))


def _norm(u8):
    return normalize(u8.float() / 255)


def test_labeled_dataset_keys_and_values():
    src = ArraySource()
    weak = WeakUniMatch(S)
    ds = LabeledDataset(src, weak)
    torch.manual_seed(0)
    item = ds[1]
    torch.manual_seed(0)
    view = weak(src.images[1], src.masks[1])
    assert set(item) == {"image", "mask", "index"} and item["index"] == 1
    assert item["image"].shape == (3, S, S) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (S, S) and item["mask"].dtype == torch.long
    assert torch.allclose(item["image"], _norm(view.image)) and torch.equal(item["mask"], view.mask)
    assert len(ds) == 3


def test_labeled_dataset_requires_masks():
    ds = LabeledDataset(ArraySource(with_masks=False), WeakCPS(S))
    with pytest.raises(SemisegError, match="img0"):
        ds[0]


def test_unlabeled_without_mask_files(tmp_path):
    ds = UnlabeledDataset(UnlabeledListSource(tmp_path), WeakUniMatch(S, scale_range=(1.0, 1.0)), num_strong=2,
                          box=UniMatchBox(), num_boxes=2)
    torch.manual_seed(0)
    item = ds[0]
    assert set(item) == {"image_w", "image_s", "box", "valid", "index"}
    assert item["image_w"].shape == (3, S, S) and item["image_s"].shape == (2, 3, S, S)
    assert item["image_s"].dtype == torch.float32
    assert item["box"].shape == (2, S, S) and item["box"].dtype == torch.bool
    assert item["valid"].shape == (S, S) and item["valid"].dtype == torch.bool
    assert int(item["valid"].sum()) == 9 * 13  # the 9 x 13 image padded to 16 x 16, without any mask


def test_unlabeled_ignores_masks_validity_from_geometry():
    # Masks full of 255 would make a mask-derived validity all False: validity must come from geometry.
    src = ArraySource(h=20, w=24, mask_value=255)
    ds = UnlabeledDataset(src, WeakCPS(S, scales=(1.0,)), num_strong=0)
    item = ds[0]
    assert set(item) == {"image_w", "valid", "index"}
    assert item["valid"].all()


def test_strong_views_share_the_weak_geometry():
    src = ArraySource()
    off = StrongPhotometric(p_jitter=0, p_gray=0, p_blur=0)
    ds = UnlabeledDataset(src, WeakUniMatch(S), num_strong=3, strong=off, box=UniMatchBox(p=0.0), num_boxes=3)
    item = ds[2]
    for k in range(3):
        assert torch.equal(item["image_s"][k], item["image_w"])
    assert not item["box"].any()
    gray = UnlabeledDataset(src, WeakUniMatch(S), 2, strong=StrongPhotometric(p_jitter=0, p_gray=1, p_blur=0))
    torch.manual_seed(4)
    item = gray[0]
    torch.manual_seed(4)
    weak = WeakUniMatch(S)(src.images[0], None).image
    expect = _norm(StrongPhotometric(p_jitter=0, p_gray=1, p_blur=0)(weak))
    assert torch.allclose(item["image_s"][0], expect) and torch.allclose(item["image_s"][1], expect)


def test_strong_views_differ_and_boxes_are_independent():
    ds = UnlabeledDataset(ArraySource(), WeakUniMatch(S), num_strong=2, box=UniMatchBox(p=1.0), num_boxes=2)
    torch.manual_seed(0)
    differ = boxes_differ = 0
    for i in range(3):
        item = ds[i]
        differ += not torch.equal(item["image_s"][0], item["image_s"][1])
        boxes_differ += not torch.equal(item["box"][0], item["box"][1])
        assert item["box"].flatten(1).any(1).all()
    assert differ >= 2 and boxes_differ >= 2


def test_loader_same_seed_same_batches():
    ds = UnlabeledDataset(ArraySource(n=4), WeakUniMatch(S), num_strong=2, box=UniMatchBox(), num_boxes=2)

    def batches(seed):
        g = torch.Generator().manual_seed(seed)
        loader = DataLoader(ds, batch_size=2, shuffle=True, num_workers=1, generator=g)
        return list(loader)

    a, b = batches(3), batches(3)
    for x, y in zip(a, b):
        assert all(torch.equal(x[k], y[k]) for k in x)
    assert a[0]["image_s"].shape == (2, 2, 3, S, S) and a[0]["box"].shape == (2, 2, S, S)


def test_declared_box_generators_and_counts():
    """A weak-view-only method with one toggled-box mask (CPS) and one with extra boxes beyond its views."""
    cps = UnlabeledDataset(ArraySource(), WeakUniMatch(S), num_strong=0, box=ToggledBoxes(), num_boxes=1)
    torch.manual_seed(0)
    item = cps[0]
    assert set(item) == {"image_w", "valid", "index", "box"} and item["box"].shape == (1, S, S)
    torch.manual_seed(0)
    weak = WeakUniMatch(S)(ArraySource().images[0], None)  # the same draws up to the box
    assert torch.equal(item["box"][0], ToggledBoxes()(S, S))
    extra = UnlabeledDataset(ArraySource(), WeakUniMatch(S), num_strong=1, box=HalfAreaBox(), num_boxes=3)
    item = extra[1]
    assert item["image_s"].shape == (1, 3, S, S) and item["box"].shape == (3, S, S)
    assert (item["box"].flatten(1).sum(1).float() / (S * S) - 0.5).abs().max() < 0.1  # half-area boxes
    with pytest.raises(SemisegError, match="box generator"):
        UnlabeledDataset(ArraySource(), WeakUniMatch(S), num_strong=1, num_boxes=1)


@dataclass(frozen=True)
class MirroredView:
    """A test alternative: with probability p, the mirrored weak crop, a full box, the left half covered."""

    p: float = 0.5

    def __call__(self, image):
        if torch.rand(()).item() >= self.p:
            return None
        height, width = image.shape[-2:]
        cover = torch.zeros(height, width, dtype=torch.bool)
        cover[:, : width // 2] = True
        return StrongReplacement(image.flip(-1), torch.ones(height, width, dtype=torch.bool), cover)


def test_alternative_view_replaces_its_strong_view_in_the_draw_order():
    strong = StrongPhotometric()
    for p in (0.0, 1.0, 0.5):
        ds = UnlabeledDataset(ArraySource(), WeakUniMatch(S), num_strong=3, strong=strong, box=UniMatchBox(),
                              num_boxes=3, alternative=MirroredView(p), alternative_index=1)
        for seed in range(4):
            torch.manual_seed(seed)
            item = ds[seed % 3]
            # weak, copy 0 + box 0, the alternative's coin, copy 1 + box 1 if kept, copy 2 + box 2
            torch.manual_seed(seed)
            weak = WeakUniMatch(S)(ArraySource().images[seed % 3], None).image
            images, boxes = [strong(weak)], [UniMatchBox()(S, S)]
            replaced = MirroredView(p)(weak)
            if replaced is None:
                images.append(strong(weak))
                boxes.append(UniMatchBox()(S, S))
                cover = torch.zeros(S, S, dtype=torch.bool)
            else:
                images.append(replaced.image)
                boxes.append(replaced.box)
                cover = replaced.cover
            images.append(strong(weak))
            boxes.append(UniMatchBox()(S, S))
            assert set(item) == {"image_w", "image_s", "box", "valid", "index", "cover"}
            assert torch.allclose(item["image_s"], _norm(torch.stack(images)))
            assert torch.equal(item["box"], torch.stack(boxes)) and torch.equal(item["cover"], cover)
            if p == 1.0:
                assert torch.allclose(item["image_s"][1], item["image_w"].flip(-1))


def test_alternative_view_cover_is_collated_and_checked():
    ds = UnlabeledDataset(ArraySource(n=4), WeakUniMatch(S), num_strong=2, box=UniMatchBox(), num_boxes=2,
                          alternative=MirroredView(1.0))
    batch = next(iter(DataLoader(ds, batch_size=4, num_workers=1)))
    assert batch["cover"].shape == (4, S, S) and batch["cover"].dtype == torch.bool
    assert batch["cover"][:, :, : S // 2].all() and not batch["cover"][:, :, S // 2:].any()
    assert batch["box"][:, 1].all()
    no_alternative = UnlabeledDataset(ArraySource(), WeakUniMatch(S), num_strong=2, box=UniMatchBox(), num_boxes=2)
    assert "cover" not in no_alternative[0]

    class Broken:
        def __call__(self, image):
            empty = torch.zeros(S, S, dtype=torch.bool)
            return StrongReplacement(image.float(), empty, empty)

    broken = UnlabeledDataset(ArraySource(), WeakUniMatch(S), num_strong=2, box=UniMatchBox(), num_boxes=2,
                              alternative=Broken())
    with pytest.raises(SemisegError, match="alternative view returned an image"):
        broken[0]
    with pytest.raises(SemisegError, match="num_strong and num_boxes > 2"):
        UnlabeledDataset(ArraySource(), WeakUniMatch(S), num_strong=2, box=UniMatchBox(), num_boxes=2,
                         alternative=MirroredView(), alternative_index=2)
