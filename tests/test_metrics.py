"""ConfusionMatrix and format_iou_table against hand computations and a numpy reference
(docs/datasets.md, Evaluation modes); a label equal to the class count is rejected, not counted."""

import numpy as np
import pytest
import torch

from semiseg.engine.metrics import ConfusionMatrix, format_iou_table
from semiseg.errors import SemisegError

TARGET = torch.tensor([[0, 0, 1], [2, 255, 1]], dtype=torch.uint8)
PRED = torch.tensor([[0, 1, 1], [2, 0, 0]])


def numpy_confusion(pred, target, c, ignore=255):
    ref = np.zeros((c, c), dtype=np.int64)
    p, t = np.asarray(pred).ravel().astype(np.int64), np.asarray(target).ravel().astype(np.int64)
    valid = t != ignore
    np.add.at(ref, (t[valid], p[valid]), 1)
    return ref


def test_hand_computed_example_and_ignore():
    cm = ConfusionMatrix(3)
    cm.update(PRED, TARGET)
    # valid (g, p): (0,0) (0,1) (1,1) (1,0) (2,2); the 255 pixel is ignored
    expected = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(cm.matrix.numpy(), expected)
    assert cm.matrix.dtype == torch.int64
    np.testing.assert_allclose(cm.iou(), [1 / 3, 1 / 3, 1.0])
    assert cm.iou().dtype == np.float64
    assert cm.miou() == pytest.approx((1 / 3 + 1 / 3 + 1) / 3 * 100)
    assert cm.pixel_accuracy() == pytest.approx(60.0)
    assert cm.absent_classes() == []
    cm.all_reduce()  # no process group: no-op
    np.testing.assert_array_equal(cm.matrix.numpy(), expected)
    cm.reset()
    assert int(cm.matrix.sum()) == 0


def test_zero_union_class_scores_zero_but_present_mean_excludes_it():
    cm = ConfusionMatrix(4)
    cm.update(PRED, TARGET)
    assert cm.iou()[3] == 0.0
    assert cm.absent_classes() == [3]
    assert cm.miou() == pytest.approx((1 / 3 + 1 / 3 + 1) / 4 * 100)
    assert cm.miou_present() == pytest.approx((1 / 3 + 1 / 3 + 1) / 3 * 100)


def test_against_numpy_reference_accumulated_over_images():
    rng = np.random.default_rng(0)
    c = 21
    cm = ConfusionMatrix(c)
    ref = np.zeros((c, c), dtype=np.int64)
    for _ in range(4):
        t = rng.integers(0, c, size=(13, 17)).astype(np.uint8)
        t[rng.random(t.shape) < 0.2] = 255
        p = rng.integers(0, c, size=(13, 17))
        cm.update(torch.from_numpy(p), torch.from_numpy(t))
        ref += numpy_confusion(p, t, c)
    np.testing.assert_array_equal(cm.matrix.numpy(), ref)
    inter = np.diag(ref)
    union = ref.sum(0) + ref.sum(1) - inter
    np.testing.assert_allclose(cm.iou(), inter / union)
    assert cm.matrix.sum() == ref.sum()


@pytest.mark.parametrize("which", ["target", "pred"])
def test_value_equal_to_num_classes_raises(which):
    cm = ConfusionMatrix(3)
    target, pred = TARGET.clone(), PRED.clone()
    (target if which == "target" else pred)[0, 0] = 3
    with pytest.raises(SemisegError, match=r"value 3 .*C = 3"):
        cm.update(pred, target)
    assert int(cm.matrix.sum()) == 0  # nothing half-added


def test_negative_pred_and_shape_mismatch_raise():
    cm = ConfusionMatrix(3)
    with pytest.raises(SemisegError, match="-1"):
        cm.update(PRED - 1, TARGET)
    with pytest.raises(SemisegError, match="shape"):
        cm.update(PRED[:, :2], TARGET)


def test_table_single_and_comparison_with_gain():
    names = ["road", "sidewalk", "building"]
    sup, semi = np.array([0.5, 0.25, 0.75]), np.array([0.6, 0.2, 0.8])
    single = format_iou_table({"supervised": sup}, names)
    assert "road" in single and "building" in single
    last = single.splitlines()[-1].split()
    assert last == ["mIoU", "50.00"]

    text = format_iou_table({"supervised": sup, "fixmatch": semi}, names, gain=True)
    lines = text.splitlines()
    assert lines[0].split() == ["class", "supervised", "fixmatch", "gain"]
    assert lines[2].split() == ["road", "50.00", "60.00", "+10.00"]
    assert lines[3].split() == ["sidewalk", "25.00", "20.00", "-5.00"]
    assert lines[-1].split() == ["mIoU", "50.00", "53.33", "+3.33"]
    widths = {len(line) for line in lines}
    assert len(widths) == 1  # aligned: every line (rules included) ends in the same column
    assert format_iou_table({"a": sup}, None).splitlines()[2].startswith("class 0")
    with pytest.raises(SemisegError):
        format_iou_table({"a": sup}, names, gain=True)
    with pytest.raises(SemisegError):
        format_iou_table({"a": sup}, names[:2])
