"""The synthetic scenes: deterministic, every class present, train/val disjoint renders."""

import numpy as np

from semiseg.catalog import DATASETS
from semiseg.config import DataConfig
from semiseg.data.synthetic import CLASS_NAMES, SyntheticScenes


def test_deterministic_and_seed_dependent():
    a, b = SyntheticScenes(4, 48).load(2), SyntheticScenes(4, 48).load(2)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    c = SyntheticScenes(4, 48, scene_seed=1).load(2)
    assert not np.array_equal(a.image, c.image)
    v = SyntheticScenes(4, 48, split="val").load(2)
    assert not np.array_equal(a.image, v.image)


def test_shapes_and_classes():
    scenes = SyntheticScenes(40, 64)
    counts = np.zeros(len(CLASS_NAMES), dtype=int)
    for i in range(len(scenes)):
        s = scenes.load(i)
        assert s.image.shape == (64, 64, 3) and s.image.dtype == np.uint8
        assert s.mask.shape == (64, 64) and s.mask.max() < len(CLASS_NAMES)
        counts += np.bincount(s.mask.ravel(), minlength=len(CLASS_NAMES))
    assert (counts > 0).all()  # every class occurs


def test_preset_carves_labeled_and_hides_unlabeled_masks():
    cfg = DataConfig(num_labeled=5)
    cfg.synthetic.num_train, cfg.synthetic.num_val = 30, 6
    splits = DATASETS.get("synthetic").build(cfg)
    assert len(splits.labeled) == 5 and len(splits.unlabeled) == 25 and len(splits.val) == 6
    assert splits.unlabeled.load(0).mask is None
    names_l = {splits.labeled.name(i) for i in range(5)}
    names_u = {splits.unlabeled.name(i) for i in range(25)}
    assert not names_l & names_u
