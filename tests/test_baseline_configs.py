"""The baseline configs (issue 4): every file loads, its method section validates, the names carry the crop
and the split, and T = epochs x floor(max(N_l, N_u) / B_u) from the split's list sizes (the Defaults
sections of docs/methods/*.md)."""

import re
from pathlib import Path

import pytest

from semiseg.catalog import METHODS
from semiseg.config import load_config, resolve_method_params
from semiseg.models.encoder import check_encoder_name

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SPLITS = Path(__file__).resolve().parents[2] / "shared" / "splits"
BASELINES = ("mean_teacher", "cps", "unimatch", "unimatch_v2", "u2pl", "csl", "cpcl", "dueb", "rrn")
PUBLISHED = sorted(p for d in ("pascal", "cityscapes", "coco", "ade20k") for p in (CONFIGS / d).glob("*.yaml"))
LITE = sorted(CONFIGS.glob(f"camvid/*_lite0_192_1_8.yaml")) + sorted(CONFIGS.glob("synthetic/*.yaml"))


def test_every_baseline_has_cpu_configs():
    names = {p.name for p in LITE}
    for method in BASELINES:
        assert f"{method}_lite0_192_1_8.yaml" in names and f"{method}.yaml" in names


@pytest.mark.parametrize("path", PUBLISHED + LITE, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_loads_and_validates(path):
    cfg = load_config(path)
    params = resolve_method_params(cfg, METHODS.get(cfg.method.name).Params)
    check_encoder_name(cfg.model.encoder)
    if path in PUBLISHED and cfg.data.target.dataset:  # cross-domain: named source_to_target, filed under the target
        source, target = cfg.data.dataset, cfg.data.target.dataset
        assert path.name.endswith(f"_{source}_to_{target}_{cfg.data.crop_size}.yaml"), "name must carry domains, crop"
        assert path.parent.name == target
    elif path in PUBLISHED:
        crop, split = cfg.data.crop_size, cfg.data.split
        assert path.name.endswith(f"_{crop}_{split}.yaml"), "file name must carry crop and split"
        assert path.parent.name == cfg.data.dataset
        if cfg.model.name == "dpt":
            assert crop % 14 == 0 and cfg.train.optimizer == "adamw"
        if cfg.data.dataset == "cityscapes":
            assert params.supervised_loss == "ohem"


@pytest.mark.skipif(not SPLITS.is_dir(), reason="shared/splits not available")
@pytest.mark.parametrize("path", [p for p in PUBLISHED if ("pascal" in p.parts or "cityscapes" in p.parts)
                                  and "_to_" not in p.name],  # cross-domain: tests/test_domains.py
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_iterations_follow_the_epoch_equivalent_rule(path):
    cfg = load_config(path)
    folder = SPLITS / cfg.data.dataset / cfg.data.split
    n_l = len((folder / "labeled.txt").read_text().splitlines())
    n_u = len((folder / "unlabeled.txt").read_text().splitlines())
    steps_per_epoch = max(n_l, n_u) // cfg.train.unlabeled_batch_size
    epochs = int(re.search(r"T = (\d+) epochs", path.read_text()).group(1))
    assert cfg.train.total_iters == epochs * steps_per_epoch


def test_published_examples_of_the_method_recipes():
    # published T: UniMatch Pascal-92 ≈ 104.9k, Cityscapes 1/16 ≈ 83.8k, CPS VOC 1/8 ≈ 39.3k, V2 Pascal-92 ≈ 39.3k
    assert load_config(CONFIGS / "pascal/unimatch_r101_321_92.yaml").train.total_iters == 1311 * 80
    assert load_config(CONFIGS / "cityscapes/unimatch_r101_801_1_16.yaml").train.total_iters == 348 * 240
    assert load_config(CONFIGS / "pascal/cps_r101_512_1_8.yaml").train.total_iters == 1157 * 34
    assert load_config(CONFIGS / "pascal/unimatch_v2_dinov2b_518_92.yaml").train.total_iters == 655 * 60
