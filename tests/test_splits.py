"""carve_labeled: a deterministic, seed-dependent partition of a list."""

import pytest

from semiseg.data.splits import carve_labeled, labeled_count
from semiseg.errors import SemisegError

ITEMS = [f"img_{i:03d}.jpg" for i in range(50)]


def test_deterministic_for_a_seed():
    assert carve_labeled(ITEMS, num_labeled=10, seed=3) == carve_labeled(ITEMS, num_labeled=10, seed=3)


def test_seed_changes_the_draw():
    draws = {tuple(carve_labeled(ITEMS, num_labeled=10, seed=s)[0]) for s in range(5)}
    assert len(draws) == 5


def test_disjoint_cover_and_list_order():
    labeled, unlabeled = carve_labeled(ITEMS, num_labeled=12, seed=1)
    assert len(labeled) == 12 and len(unlabeled) == 38
    assert not set(labeled) & set(unlabeled)
    assert sorted(labeled + unlabeled) == sorted(ITEMS)
    assert labeled == sorted(labeled, key=ITEMS.index)
    assert unlabeled == sorted(unlabeled, key=ITEMS.index)


def test_smaller_draws_are_nested_for_one_seed():
    small = set(carve_labeled(ITEMS, num_labeled=5, seed=7)[0])
    large = set(carve_labeled(ITEMS, num_labeled=20, seed=7)[0])
    assert small < large


def test_fraction_rounds_and_keeps_at_least_one():
    assert labeled_count(50, fraction=0.25) == 13  # 12.5 rounds half up
    assert labeled_count(50, fraction=0.001) == 1
    assert labeled_count(50, fraction=1.0) == 50
    labeled, unlabeled = carve_labeled(ITEMS, fraction=0.1, seed=0)
    assert len(labeled) == 5 and len(unlabeled) == 45


def test_all_labeled():
    labeled, unlabeled = carve_labeled(ITEMS, num_labeled=50)
    assert labeled == ITEMS and unlabeled == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_labeled=51), "num_labeled=51 .* 50 images"),
        (dict(num_labeled=0), "num_labeled=0"),
        (dict(fraction=0.0), r"labeled_fraction must be in \(0, 1\]"),
        (dict(fraction=1.5), "labeled_fraction"),
        (dict(num_labeled=3, fraction=0.5), "exactly one"),
        (dict(), "exactly one"),
    ],
)
def test_errors(kwargs, match):
    with pytest.raises(SemisegError, match=match):
        carve_labeled(ITEMS, **kwargs)
