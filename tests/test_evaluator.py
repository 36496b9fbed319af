"""Eval modes and sharded evaluate() (docs/datasets.md, Evaluation modes) with fake per-pixel models: sliding
windows are full-size for any class count, and every valid pixel counts exactly once."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from semiseg.data.normalize import normalize, to_tensor
from semiseg.data.sample import Sample
from semiseg.engine.evaluator import Region, evaluate, predict_logits, window_starts
from semiseg.errors import SemisegError


class PixelModel:
    """A fixed 1x1 conv (a per-pixel function) that records every input it is given."""

    def __init__(self, num_classes, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(num_classes, 3, 1, 1, generator=g)
        self.bias = torch.randn(num_classes, generator=g)
        self.inputs = []

    def __call__(self, x):
        self.inputs.append(x.clone())
        return F.conv2d(x, self.weight, self.bias)


class TinySource:
    """Random labeled images of varying sizes; about 20 % of the mask pixels are ignore (255)."""

    def __init__(self, n=7, num_classes=5, seed=0, unlabeled=()):
        rng = np.random.default_rng(seed)
        self.num_classes = num_classes
        self.samples = []
        for i in range(n):
            h, w = int(rng.integers(9, 21)), int(rng.integers(9, 21))
            image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            mask = rng.integers(0, num_classes, size=(h, w)).astype(np.uint8)
            mask[rng.random((h, w)) < 0.2] = 255
            self.samples.append(Sample(image, None if i in unlabeled else mask, f"img_{i:03d}"))

    def __len__(self):
        return len(self.samples)

    def load(self, i):
        return self.samples[i]

    def name(self, i):
        return self.samples[i].name


def test_window_starts():
    assert window_starts(1024, 798, int(798 * 2 / 3)) == [0, 226]
    assert window_starts(2048, 798, int(798 * 2 / 3)) == [0, 532, 1064, 1250]
    assert window_starts(37, 16, 10) == [0, 10, 20, 21]
    assert window_starts(40, 16, 12) == [0, 12, 24]  # exact fit: no extra window
    assert window_starts(16, 16, 10) == [0]
    assert window_starts(10, 16, 10) == [0]  # shorter than the window: padded by the caller


def test_sliding_window_21_classes_full_windows_and_positions():
    c, s = 21, 16
    model = PixelModel(c)
    image = torch.randn(1, 3, 37, 50)  # neither side divisible by the stride 10
    out, region = predict_logits(model, image, c, "sliding_window", crop_size=s, window_batch=8)
    assert out.shape == (1, c, 37, 50) and region == Region(0, 0, 37, 50)
    rows, cols = [0, 10, 20, 21], [0, 10, 20, 30, 34]  # by hand
    assert [x.shape[0] for x in model.inputs] == [8, 8, 4]
    windows = torch.cat(model.inputs)
    assert windows.shape[1:] == (3, s, s)  # every window is exactly S x S
    expected = [image[0, :, r : r + s, q : q + s] for r in rows for q in cols]
    assert torch.equal(windows, torch.stack(expected))
    # coverage: the summed probabilities add up to the number of windows over each pixel
    count = np.zeros((37, 50))
    for r in rows:
        for q in cols:
            count[r : r + s, q : q + s] += 1
    np.testing.assert_allclose(out.sum(1)[0].numpy(), count, rtol=1e-5)


@pytest.mark.parametrize("size", [(37, 50), (10, 50), (7, 9)])
def test_sliding_equals_full_image_for_per_pixel_model(size):
    c, s = 21, 16
    image = torch.randn(1, 3, *size)
    model = PixelModel(c, seed=1)
    summed, _ = predict_logits(model, image, c, "sliding_window", crop_size=s)
    full = model(image).softmax(1)
    assert summed.shape == full.shape
    assert all(x.shape[-2:] == (s, s) for x in model.inputs[:-1])
    torch.testing.assert_close(summed / summed.sum(1, keepdim=True), full, rtol=1e-5, atol=1e-6)
    assert torch.equal(summed.argmax(1), full.argmax(1))
    if size[0] < s:  # padded bottom rows are zeros in normalised space
        assert torch.all(model.inputs[0][:, :, size[0] :, :] == 0)


def test_center_crop_crops_target_and_never_pads():
    c, s = 4, 20
    model = PixelModel(c)
    image = torch.randn(1, 3, 40, 30)
    out, region = predict_logits(model, image, c, "center_crop", crop_size=s)
    assert region == Region(10, 5, 20, 20) and out.shape == (1, c, 20, 20)
    assert torch.equal(model.inputs[-1], image[:, :, 10:30, 5:25])
    mask = np.arange(40 * 30).reshape(40, 30)
    np.testing.assert_array_equal(region.crop(mask), mask[10:30, 5:25])

    small = torch.randn(1, 3, 12, 30)  # height smaller than S: kept whole, not padded
    out, region = predict_logits(model, small, c, "center_crop", crop_size=s)
    assert region == Region(0, 5, 12, 20) and out.shape == (1, c, 12, 20)
    out, region = predict_logits(model, torch.randn(1, 3, 8, 9), c, "center_crop", crop_size=s)
    assert region == Region(0, 0, 8, 9) and model.inputs[-1].shape == (1, 3, 8, 9)


def test_resize_round_trip_shapes():
    c = 3
    model = PixelModel(c)
    image = torch.randn(1, 3, 30, 45)
    out, region = predict_logits(model, image, c, "resize", resize_multiple=14)
    assert model.inputs[-1].shape == (1, 3, 28, 42)  # floor(30/14+.5)*14, floor(45/14+.5)*14
    assert out.shape == (1, c, 30, 45) and region == Region(0, 0, 30, 45)
    out, _ = predict_logits(model, image, c, "resize", resize_to=(20, 24))
    assert model.inputs[-1].shape == (1, 3, 20, 24) and out.shape == (1, c, 30, 45)
    with pytest.raises(SemisegError, match="resize_multiple"):
        predict_logits(model, image, c, "resize")


def test_bad_mode_and_bad_output_raise():
    image = torch.randn(1, 3, 8, 8)
    with pytest.raises(SemisegError, match="unknown eval mode"):
        predict_logits(PixelModel(3), image, 3, "flip")
    with pytest.raises(SemisegError, match="crop_size"):
        predict_logits(PixelModel(3), image, 3, "sliding_window")
    with pytest.raises(SemisegError, match="output shape"):
        predict_logits(PixelModel(4), image, 3, "original")


def reference_confusion(source, model, c, crop=None):
    """Independent numpy confusion: full-image argmax, optional hand-computed centre crop."""
    ref = np.zeros((c, c), dtype=np.int64)
    for i in range(len(source)):
        sample = source.load(i)
        x = normalize(to_tensor(sample.image)).unsqueeze(0)
        pred = F.conv2d(x, model.weight, model.bias).argmax(1)[0].numpy()
        mask = sample.mask
        if crop is not None:
            h, w = mask.shape
            t, l = max(h - crop, 0) // 2, max(w - crop, 0) // 2
            pred, mask = pred[t : t + crop, l : l + crop], mask[t : t + crop, l : l + crop]
        valid = mask != 255
        np.add.at(ref, (mask[valid].astype(np.int64), pred[valid]), 1)
    return ref


@pytest.mark.parametrize("mode,kw", [("original", {}), ("sliding_window", {"crop_size": 8}),
                                     ("center_crop", {"crop_size": 12})])
def test_sharded_evaluate_matches_single_process(mode, kw):
    c = 5
    source, model = TinySource(num_classes=c), PixelModel(c, seed=2)
    crop = kw.get("crop_size") if mode == "center_crop" else None
    ref = reference_confusion(source, model, c, crop)
    for w in (1, 2, 3):
        results = [evaluate(model, source, c, mode, rank=r, world_size=w, **kw) for r in range(w)]
        total = sum(res.confusion for res in results)
        np.testing.assert_array_equal(total, ref)
        assert sum(res.num_images for res in results) == len(source)
    if crop is None:  # every valid ground-truth pixel counted exactly once
        assert ref.sum() == sum(int((s.mask != 255).sum()) for s in source.samples)
    single = evaluate(model, source, c, mode, **kw)
    assert single.confusion.dtype == np.int64
    inter = np.diag(ref)
    union = ref.sum(0) + ref.sum(1) - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    np.testing.assert_allclose(single.iou, iou)
    assert single.miou == pytest.approx(iou.mean() * 100)
    assert "mIoU" in single.table()


def test_evaluate_rejects_unlabeled_and_out_of_range_masks():
    model = PixelModel(5)
    with pytest.raises(SemisegError, match="img_002.*no mask"):
        evaluate(model, TinySource(n=3, unlabeled=(2,)), 5, "original")
    source = TinySource(n=2)
    source.samples[1].mask[0, 0] = 5  # == C
    with pytest.raises(SemisegError, match="img_001.*value 5"):
        evaluate(model, source, 5, "original")
