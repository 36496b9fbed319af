"""G1 CutMix box and the roll partner (docs/method_interface.md, Box generators and Partner rules): the
partner is another image of the batch, never the sample itself."""

import math

import pytest
import torch

from semiseg.components.cutmix import mix, partner_of, roll_partner, unimatch_box


def _bbox(box):
    rows = box.any(1).nonzero().flatten()
    cols = box.any(0).nonzero().flatten()
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def test_box_empty_with_probability_one_minus_p():
    torch.manual_seed(0)
    n = 2000
    empty = sum(not unimatch_box(32, p=0.5).any() for _ in range(n))
    assert abs(empty / n - 0.5) < 0.04
    assert not any(unimatch_box(32, p=0.0).any() for _ in range(50))


def test_box_is_a_rectangle_of_bounded_area():
    s = 32
    torch.manual_seed(1)
    lo_area = 0.02 * s * s
    # w = int(sqrt(A/r)), h = int(sqrt(A r)) with r in [0.3, 1/0.3]: w h >= A - sqrt(A)(sqrt(r) + 1/sqrt(r)) + 1,
    # increasing in A here, so the int truncation costs at most c sqrt(A_min) - 1 pixels at the smallest area.
    c = math.sqrt(1 / 0.3) + math.sqrt(0.3)
    slack = c * math.sqrt(lo_area) - 1
    areas = []
    for _ in range(400):
        box = unimatch_box(s, p=1.0)
        assert box.shape == (s, s) and box.dtype == torch.bool
        area = int(box.sum())
        assert area > 0
        y0, y1, x0, x1 = _bbox(box)
        assert (y1 - y0) * (x1 - x0) == area and box[y0:y1, x0:x1].all()
        assert 0 <= y0 and y1 <= s and 0 <= x0 and x1 <= s
        assert lo_area - slack <= area <= 0.4 * s * s
        areas.append(area)
    assert min(areas) < 0.1 * s * s and max(areas) > 0.3 * s * s


def test_box_same_seed_same_box():
    torch.manual_seed(7)
    a = [unimatch_box(24) for _ in range(5)]
    torch.manual_seed(7)
    b = [unimatch_box(24) for _ in range(5)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("b", [2, 3, 4, 5])
def test_roll_partner_is_next_and_never_self(b):
    idx = torch.arange(b)
    partner = roll_partner(idx)
    assert torch.equal(partner, (idx + 1) % b)
    assert (partner != idx).all()


def test_mix_takes_partner_exactly_inside_box():
    b, s = 3, 8
    torch.manual_seed(0)
    boxes = torch.zeros(b, s, s, dtype=torch.bool)
    boxes[0, 1:4, 2:6] = True
    boxes[2, 5:8, 0:3] = True  # sample 1 has no box
    images = torch.arange(b, dtype=torch.float).view(b, 1, 1, 1).expand(b, 3, s, s) + torch.rand(b, 3, s, s)
    labels = torch.arange(b).view(b, 1, 1).expand(b, s, s).clone()
    valid = torch.ones(b, s, s, dtype=torch.bool)
    valid[1, :, 4:] = False  # padding of sample 1 travels into sample 0's box
    conf = torch.rand(b, s, s)
    for x in (images, labels, valid, conf):
        out = mix(x, boxes)
        assert out.shape == x.shape and out.dtype == x.dtype
        for i in range(b):
            m = boxes[i]
            j = (i + 1) % b
            assert torch.equal(out[i][..., m], x[j][..., m])
            assert torch.equal(out[i][..., ~m], x[i][..., ~m])
    mixed_labels = mix(labels, boxes)
    assert (mixed_labels[0][boxes[0]] == 1).all() and (mixed_labels[2][boxes[2]] == 0).all()
    assert int((~mix(valid, boxes)[0]).sum()) == 3 * 2  # rows 1:4, cols 4:6 are padding of sample 1


def test_mix_errors_and_explicit_partner():
    x = torch.rand(1, 3, 4, 4)
    box = torch.ones(1, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="at least 2"):
        mix(x, box)
    other = torch.rand(1, 3, 4, 4)
    assert torch.equal(mix(x, box, partner=other), other)
    with pytest.raises(ValueError):
        mix(torch.rand(2, 4, 4), torch.ones(2, 5, 5, dtype=torch.bool))


def test_partner_rules():
    x = torch.arange(5)
    assert partner_of(x, "roll").tolist() == [1, 2, 3, 4, 0]
    assert partner_of(x, "flip").tolist() == [4, 3, 2, 1, 0]  # released V2: the middle sample is its own partner
    with pytest.raises(ValueError, match="roll, flip"):
        partner_of(x, "stream")
    box = torch.ones(3, 2, 2, dtype=torch.bool)
    labels = torch.arange(3).view(3, 1, 1).expand(3, 2, 2)
    assert mix(labels, box, rule="flip")[:, 0, 0].tolist() == [2, 1, 0]
