"""Cross-domain runs (docs/datasets.md, "Across domains"): labeled images from data.dataset, unlabeled and val
images from data.target; the classes must agree; GTA5 -> Cityscapes on tiny trees in the real formats; a tiny
end-to-end run evaluated on the target."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from engine_runs import TINY_RUN
from semiseg.catalog import DATASETS
from semiseg.cli import main
from semiseg.config import DataConfig, load_config
from semiseg.data.domains import CrossDomainPreset, check_same_classes, dataset_preset
from semiseg.data.listfile import ListFileSource
from semiseg.data.presets import Preset
from semiseg.data.synthetic import SyntheticScenes
from semiseg.engine.inference import evaluate_checkpoint
from semiseg.errors import SemisegError
from test_cli import make_camvid_tree
from test_presets import gta5_tree

REPO = Path(__file__).resolve().parents[1]
SPLITS = REPO.parent / "shared" / "splits"


def data_cfg(overrides=()):
    """A typed `data` section, as a run sees it."""
    return load_config(None, ["train.total_iters=1", *overrides]).data


def synthetic_pair(*extra):
    return data_cfg(["data.num_labeled=6", "data.synthetic.num_train=20", "data.synthetic.num_val=4",
                     "data.synthetic.image_size=32", "data.target.dataset=synthetic",
                     "data.target.synthetic.style=b", "data.target.synthetic.scene_seed=1", *extra])


def test_no_target_is_the_plain_preset():
    assert dataset_preset(data_cfg(), DATASETS) is DATASETS.get("synthetic")
    assert dataset_preset(DataConfig(), DATASETS) is DATASETS.get("synthetic")


def test_synthetic_source_labeled_target_unlabeled_and_val():
    cfg = synthetic_pair("data.target.synthetic.num_train=12")
    preset = dataset_preset(cfg, DATASETS)
    assert isinstance(preset, CrossDomainPreset) and preset.num_classes == 7 and preset.eval_mode == "original"
    splits = preset.build(cfg)
    assert (len(splits.labeled), len(splits.unlabeled), len(splits.val)) == (6, 12, 4)
    source = SyntheticScenes(20, 32, scene_seed=0)
    target_train = SyntheticScenes(12, 32, scene_seed=1, style="b")
    target_val = SyntheticScenes(4, 32, scene_seed=1, split="val", style="b")
    # labeled: style-A scenes of the source's seed, carved like a one-domain run (the other 14 are not used)
    carved = DATASETS.get("synthetic").build(data_cfg(["data.num_labeled=6", "data.synthetic.num_train=20",
                                                       "data.synthetic.image_size=32"]))
    assert [splits.labeled.name(i) for i in range(6)] == [carved.labeled.name(i) for i in range(6)]
    index = int(splits.labeled.name(0).rsplit("/", 1)[1])
    assert np.array_equal(splits.labeled.load(0).image, source.load(index).image)
    assert splits.labeled.load(0).mask is not None
    # unlabeled: every target train scene, style B, masks hidden; val: the target's val scenes
    assert splits.unlabeled.load(3).mask is None
    assert np.array_equal(splits.unlabeled.load(3).image, target_train.load(3).image)
    assert np.array_equal(splits.val.load(2).image, target_val.load(2).image)
    assert np.array_equal(splits.val.load(2).mask, target_val.load(2).mask)
    assert splits.lists == {
        "labeled": "synthetic: synthetic/train (style a, scene_seed=0): 6 labeled, split_seed=0; 14 not used",
        "unlabeled": "synthetic: synthetic/train (style b, scene_seed=1)",
        "val": "synthetic: synthetic/val (style b, scene_seed=1)"}
    assert preset.build_val(cfg)[1] == splits.lists["val"]


def test_target_synthetic_keys_default_to_the_source_ones():
    cfg = data_cfg(["data.synthetic.num_train=9", "data.synthetic.num_val=3", "data.synthetic.image_size=24",
                    "data.target.dataset=synthetic", "data.target.synthetic.style=b"])
    splits = dataset_preset(cfg, DATASETS).build(cfg)
    assert (len(splits.labeled), len(splits.unlabeled), len(splits.val)) == (9, 9, 3)  # every source scene labeled
    assert splits.val.load(0).image.shape == (24, 24, 3)
    # same seed: the same layouts (masks) as the source's scenes, in style B
    assert np.array_equal(SyntheticScenes(3, 24, split="val").load(1).mask, splits.val.load(1).mask)


def test_list_presets_two_roots(tmp_path):
    source_root = make_camvid_tree(tmp_path / "source", n_train=5, n_val=1)
    target_root = make_camvid_tree(tmp_path / "target", n_train=3, n_val=2)
    (target_root / "unl.txt").write_text("train/0.png\ntrain/2.png\n")  # images only: masks are never read
    cfg = data_cfg(["data.dataset=camvid", f"data.root={source_root}", "data.num_labeled=2",
                    "data.target.dataset=camvid", f"data.target.root={target_root}",
                    "data.target.unlabeled_list=unl.txt"])
    splits = dataset_preset(cfg, DATASETS).build(cfg)
    assert isinstance(splits.labeled, ListFileSource) and splits.labeled.root == source_root
    assert len(splits.labeled) == 2 and splits.labeled.load(0).mask is not None
    assert splits.unlabeled.root == target_root and len(splits.unlabeled) == 2
    assert splits.unlabeled.load(1).mask is None and splits.unlabeled.name(1) == "train/2.png"
    assert splits.val.root == target_root and len(splits.val) == 2
    assert splits.lists["labeled"] == f"camvid: {source_root / 'train.txt'} (carved 2, split_seed=0); 3 not used"
    assert splits.lists["unlabeled"] == f"camvid: {target_root / 'unl.txt'}"
    assert splits.lists["val"] == f"camvid: {target_root / 'val.txt'}"
    # the target's own default lists when none is given
    cfg = data_cfg(["data.dataset=camvid", f"data.root={source_root}", "data.target.dataset=camvid",
                    f"data.target.root={target_root}"])
    splits = dataset_preset(cfg, DATASETS).build(cfg)
    assert (len(splits.labeled), len(splits.unlabeled), len(splits.val)) == (5, 3, 2)


def cityscapes_tree(root: Path) -> Path:
    """Cityscapes' layout, 16x16: 2 train images (their masks unread), 1 val image with a train-id mask."""
    for split, city, n in (("train", "aachen", 2), ("val", "lindau", 1)):
        for i in range(n):
            stem = f"{city}_00000{i}_000019"
            image = root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
            image.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((16, 16, 3), 60 + i, np.uint8)).save(image)
            mask = root / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png"
            mask.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((16, 16), 13, np.uint8)).save(mask)
    (root / "val.txt").write_text("leftImg8bit/val/lindau/lindau_000000_000019_leftImg8bit.png "
                                  "gtFine/val/lindau/lindau_000000_000019_gtFine_labelTrainIds.png\n")
    return root


def test_gta5_to_cityscapes_on_tiny_trees(tmp_path):
    ids = np.full((16, 16), 7, np.uint8)  # road
    ids[8:], ids[:, :2] = 26, 0  # car, unlabeled
    gta5 = gta5_tree(tmp_path / "gta5", {"00001": ids, "00002": np.full((16, 16), 33, np.uint8)})
    cityscapes = cityscapes_tree(tmp_path / "cityscapes")
    cfg = load_config(REPO / "configs" / "cityscapes" / "u2pl_gta5_to_cityscapes_769.yaml",
                      [f"data.root={gta5}", f"data.target.root={cityscapes}", "data.target.val_list=val.txt"])
    preset = dataset_preset(cfg.data, DATASETS)
    assert (preset.name, preset.eval_mode, preset.crop_size) == ("gta5 -> cityscapes", "sliding_window", 801)
    assert preset.class_names == DATASETS.get("cityscapes").class_names
    splits = preset.build(cfg.data)
    assert (len(splits.labeled), len(splits.unlabeled), len(splits.val)) == (2, 2, 1)
    mask = splits.labeled.load(0).mask
    assert (mask[:8, 2:] == 0).all() and (mask[8:, 2:] == 13).all() and (mask[:, :2] == 255).all()
    assert (splits.labeled.load(1).mask == 18).all()  # bicycle
    assert splits.unlabeled.name(1) == "leftImg8bit/train/aachen/aachen_000001_000019_leftImg8bit.png"
    assert splits.unlabeled.load(0).mask is None and (splits.val.load(0).mask == 13).all()
    assert splits.lists["labeled"] == f"gta5: {gta5 / 'images/*.png'}"
    assert splits.lists["unlabeled"] == f"cityscapes: {cityscapes / 'leftImg8bit/train/*/*_leftImg8bit.png'}"


def test_gta5_to_cityscapes_iterations():
    cfg = load_config(REPO / "configs" / "cityscapes" / "u2pl_gta5_to_cityscapes_769.yaml")
    assert (cfg.data.dataset, cfg.data.target.dataset, cfg.data.num_labeled, cfg.data.split) == \
        ("gta5", "cityscapes", None, None)
    assert (cfg.method.name, cfg.data.crop_size, cfg.eval.mode, cfg.method.supervised_loss) == \
        ("u2pl", 769, "sliding_window", "ohem")
    epochs, steps = map(int, re.search(r"T = (\d+) epochs of the target: \d+ x ⌊2975 / 16⌋ = \d+ x (\d+) steps",
                                       (REPO / "configs/cityscapes/u2pl_gta5_to_cityscapes_769.yaml").read_text())
                        .groups())
    assert steps == 2975 // cfg.train.unlabeled_batch_size and cfg.train.total_iters == epochs * steps
    if SPLITS.is_dir():  # 2975 = the Cityscapes train images (the 1/2 split's two halves)
        half = SPLITS / "cityscapes" / "1_2"
        assert sum(len((half / f).read_text().split()) // 2 for f in ("labeled.txt", "unlabeled.txt")) == 2975


def test_different_classes_is_one_line():
    with pytest.raises(SemisegError) as info:
        dataset_preset(data_cfg(["data.dataset=camvid", "data.target.dataset=cityscapes"]), DATASETS)
    assert str(info.value) == (
        "data.dataset 'camvid' (11 classes) and data.target.dataset 'cityscapes' (19 classes) have different "
        "classes: class 0 is 'Sky' in camvid, 'road' in cityscapes; a cross-domain run needs a target with the "
        "source's classes, in the same order")
    two = Preset("two", ("a", "b"), ((0, 0, 0), (1, 1, 1)))
    three = Preset("three", ("a", "b", "c"), ((0, 0, 0), (1, 1, 1), (2, 2, 2)))
    with pytest.raises(SemisegError, match=r"class 2 is none in two, 'c' in three;"):
        check_same_classes(two, three)
    check_same_classes(DATASETS.get("gta5"), DATASETS.get("cityscapes"))


@pytest.mark.parametrize("overrides, message", [
    (["data.target.root=/data/cityscapes"],
     "data.target.root is set but data.target.dataset is not: name the target dataset (data.target.dataset=...) "
     "or unset data.target.*"),
    (["data.target.synthetic.style=b"],
     "data.target.synthetic.style is set but data.target.dataset is not: name the target dataset "
     "(data.target.dataset=...) or unset data.target.*"),
    (["data.target.dataset=synthetic", "data.val_list=val.txt"],
     "data.val_list does not apply to a cross-domain run (data.target.dataset=synthetic): the val images come "
     "from the target; set data.target.val_list instead"),
    (["data.target.dataset=synthetic", "data.unlabeled_list=unl.txt"],
     "data.unlabeled_list does not apply to a cross-domain run (data.target.dataset=synthetic): the unlabeled "
     "images come from the target; set data.target.unlabeled_list instead"),
    (["data.target.dataset=cityscape"],
     "data.target.dataset: unknown dataset 'cityscape' (did you mean 'cityscapes'?); valid datasets: ade20k, "
     "camvid, cityscapes, coco, folder, gta5, pascal, synthetic"),
])
def test_target_key_mistakes_are_one_line(overrides, message):
    with pytest.raises(SemisegError) as info:
        dataset_preset(data_cfg(overrides), DATASETS)
    assert str(info.value) == message


def test_target_root_messages_name_the_target_keys(tmp_path):
    gta5 = gta5_tree(tmp_path / "gta5", {"00001": np.full((16, 16), 7, np.uint8)})
    cfg = data_cfg(["data.dataset=gta5", f"data.root={gta5}", "data.target.dataset=cityscapes"])
    with pytest.raises(SemisegError, match=r"^dataset 'cityscapes' has no default folder; pass "
                                           r"data.target.root=/path/to/cityscapes$"):
        dataset_preset(cfg, DATASETS).build(cfg)
    cfg = data_cfg(["data.dataset=gta5", f"data.root={gta5}", "data.target.dataset=cityscapes",
                    f"data.target.root={tmp_path / 'absent'}"])
    with pytest.raises(SemisegError, match=r"^dataset folder not found: .*absent \(dataset 'cityscapes'\); pass "
                                           r"data.target.root=/path/to/cityscapes$"):
        dataset_preset(cfg, DATASETS).build(cfg)
    cfg = data_cfg(["data.dataset=gta5", f"data.root={gta5}", "data.target.dataset=gta5",
                    f"data.target.root={gta5}"])
    with pytest.raises(SemisegError, match=r"^dataset 'gta5' has no val list of its own; set "
                                           r"data.target.val_list=<list file> \('image mask' per line\)$"):
        dataset_preset(cfg, DATASETS).build(cfg)


def test_tiny_supervised_run_is_evaluated_on_the_target(tmp_path, monkeypatch, capsys):
    """Source-only: `supervised` trains on style-A scenes; the summary (and `semiseg eval`) score style B."""
    monkeypatch.chdir(REPO)
    out = tmp_path / "run"
    target = ["data.target.dataset=synthetic", "data.target.synthetic.style=b", "data.target.synthetic.scene_seed=1"]
    assert main(["train", *TINY_RUN, "train.total_iters=2", "train.total_batch_size=2", f"output_dir={out}",
                 *target]) == 0
    summary = json.loads((out / "summary.json").read_text())
    lists = json.loads((out / "run_info.json").read_text())["data_lists"]
    assert lists["labeled"].startswith("synthetic: synthetic/train (style a, scene_seed=0): 8 labeled")
    assert lists["val"] == "synthetic: synthetic/val (style b, scene_seed=1)"
    assert summary["val_images"] == 5 and summary["iterations"] == 2
    saved = OmegaConf.load(out / "config.yaml")
    assert saved.data.target.synthetic.style == "b"
    on_b, _ = evaluate_checkpoint(out / "latest.pt")
    on_a, _ = evaluate_checkpoint(out / "latest.pt", overrides=["data.target.synthetic.style=a"])
    # the probabilities (hence the calibration error) are the style-B images': the summary's
    assert on_b.ece == pytest.approx(summary["ece"], abs=1e-9) and on_b.miou == pytest.approx(summary["last_miou"])
    assert on_a.ece != pytest.approx(summary["ece"], abs=1e-6)


@pytest.mark.slow
def test_tiny_u2pl_run_reads_the_target_unlabeled_images(tmp_path, monkeypatch):
    """configs/synthetic/domain_u2pl.yaml at tiny size: the method is unchanged, its unlabeled stream is style B."""
    monkeypatch.chdir(REPO)
    out = tmp_path / "run"
    assert main(["train", "configs/synthetic/domain_u2pl.yaml", *TINY_RUN[1:], "data.num_labeled=4",
                 "train.total_iters=2", "train.total_batch_size=2", "train.unlabeled_batch_size=2",
                 "model.heads.representation=8", "method.warmup_epochs=0", f"output_dir={out}"]) == 0
    info = json.loads((out / "run_info.json").read_text())
    assert (info["num_labeled"], info["num_unlabeled"]) == (4, 16)
    assert info["data_lists"]["unlabeled"] == "synthetic: synthetic/train (style b, scene_seed=1)"
    assert json.loads((out / "summary.json").read_text())["val_images"] == 5


def test_eval_root_is_the_target_folder(tmp_path, monkeypatch):
    """`semiseg eval --root` on a cross-domain checkpoint points at the target (the val images' folder)."""
    monkeypatch.chdir(REPO)
    source = make_camvid_tree(tmp_path / "source", n_train=2, n_val=1)
    target = make_camvid_tree(tmp_path / "target", n_train=2, n_val=2)
    moved = make_camvid_tree(tmp_path / "moved", n_train=1, n_val=3)
    out = tmp_path / "run"
    assert main(["train", *TINY_RUN, "data.dataset=camvid", f"data.root={source}", "data.num_labeled=null",
                 "data.crop_size=16", "data.target.dataset=camvid", f"data.target.root={target}",
                 "train.total_iters=1", "train.total_batch_size=2", f"output_dir={out}"]) == 0
    assert json.loads((out / "summary.json").read_text())["val_images"] == 2
    assert evaluate_checkpoint(out / "latest.pt")[0].num_images == 2
    assert evaluate_checkpoint(out / "latest.pt", root=str(moved))[0].num_images == 3
