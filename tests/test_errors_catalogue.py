"""docs/errors.md, tested: one case per row of the catalogue of bad inputs.

Each case makes one mistake a user can make (in a config, the data, a checkpoint, the command line, the
filesystem or the weights), runs the command line in-process and checks the contract: exit status 2, exactly
one stderr line `error: ...`, the documented message, and no file that existed before changed. The table below
mirrors the page: `test_doc_and_table_agree` fails when a row is added, removed or reworded on one side only.
A message is matched whole; `...` stands for a variable part (a path, a count, a library's own wording).
"""

import hashlib
import re
import shutil
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import pytest
import torch
from PIL import Image

from semiseg.cli import main
from test_cli import make_camvid_tree

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "errors.md"
SUP = str(REPO / "configs" / "synthetic" / "supervised.yaml")
BASE = str(REPO / "configs" / "_base_" / "synthetic.yaml")
# A 0.3 M-parameter network on 32 px scenes: a 1-iteration run takes seconds, and most cases stop before it.
TINY = ["model.encoder=mobilenetv3_small_050", "model.pretrained=null", "model.aspp_channels=8",
        "model.decoder_channels=8", "model.low_level_channels=8", "data.num_workers=0",
        "data.synthetic.num_train=4", "data.synthetic.num_val=1", "data.synthetic.image_size=32",
        "data.crop_size=32", "data.scale_range=[1.0,1.0]", "data.num_labeled=2", "train.total_batch_size=2",
        "train.unlabeled_batch_size=2", "train.eval_every=100"]


def camvid_tree(root: Path) -> Path:
    """A CamVid-like folder with 2 train and 2 val images (tests/test_cli.py)."""
    return make_camvid_tree(root, n_train=2, n_val=2)


class Setup:
    """What a case builds its mistake with: a fresh folder, the module's tiny checkpoint, monkeypatch."""

    def __init__(self, tmp: Path, ckpt: Path, monkeypatch):
        self.tmp, self.ckpt, self.mp = tmp, ckpt, monkeypatch

    def train(self, *extra, config=SUP, out=None) -> list:
        return ["train", str(config), *TINY, "train.total_iters=1", f"output_dir={out or self.tmp / 'run'}",
                "--no-progress", *map(str, extra)]

    def camvid(self, *extra):
        root = camvid_tree(self.tmp / "camvid")
        return root, self.train(f"data.root={root}", "data.dataset=camvid", "data.num_labeled=null",
                                "data.crop_size=16", *extra)

    def write(self, name: str, text: str) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def image(self, name: str, size=(20, 24)) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((*size, 3), 90, np.uint8)).save(path)
        return path

    def run_dir(self) -> Path:
        """output_dir `run` holding a run (a copy of the tiny checkpoint as its latest.pt)."""
        (self.tmp / "run").mkdir()
        shutil.copy(self.ckpt, self.tmp / "run" / "latest.pt")
        return self.tmp / "run"


# ---------------------------------------------------------------- config
def unknown_key_in_file(s):
    return s.train(config=s.write("exp.yaml", f"_base_: {BASE}\ntrain:\n  totl_iters: 3\n"))


def missing_total_iters(s):
    return ["train", str(s.write("exp.yaml", "method:\n  name: supervised\n")), f"output_dir={s.tmp / 'run'}"]


def needs_a_head(s):
    from semiseg.catalog import METHODS

    class NeedsVariance(METHODS.get("supervised")):
        required_heads = ("variance",)

    s.mp.setitem(METHODS._items, "needs_variance", NeedsVariance)
    return s.train("method.name=needs_variance")


def base_two_levels(s):
    s.write("b.yaml", "train:\n  lr: 0.1\n")
    s.write("a.yaml", "_base_: b.yaml\n")
    return s.train(config=s.write("exp.yaml", "_base_: a.yaml\n"))


# ---------------------------------------------------------------- data
def camvid_edit(edit):
    """A case on the CamVid-like tree after `edit(root)` broke something in it."""
    def case(s):
        root, argv = s.camvid()
        edit(root)
        return argv
    return case


def save_mask(relative, array):
    return lambda root: Image.fromarray(array).save(root / relative)


def both_labeled_and_unlabeled(s):
    root, argv = s.camvid("method.name=fixmatch", f"data.unlabeled_list={s.tmp / 'camvid' / 'unl.txt'}")
    (root / "unl.txt").write_text("train/0.png\n")
    return argv


def world_size_three(s):
    import semiseg.engine.trainer as trainer

    real = trainer.plan_from_config  # torchrun --nproc_per_node=3, without starting three processes
    s.mp.setattr(trainer, "plan_from_config", lambda train_cfg, world_size: real(train_cfg, 3))
    return s.train("train.total_batch_size=8")


def folder(card=None, images=("a", "b", "c"), masks=("a", "b"), mask=None):
    """A case on a folder dataset (docs/datasets.md, "Your own folder of images"): images/<name>.png, masks of
    `masks` (`mask`: the mask array, default 0/255 halves) and dataset.yaml holding `card` (None: none)."""
    def case(s):
        for name in images:
            s.image(f"folder/images/{name}.png", size=(16, 16))
        for name in masks:
            (s.tmp / "folder" / "masks").mkdir(parents=True, exist_ok=True)
            pixels = mask if mask is not None else np.repeat(np.array([0, 255], np.uint8), 8)[:, None].repeat(16, 1)
            Image.fromarray(pixels).save(s.tmp / "folder" / "masks" / f"{name}.png")
        if card is not None:
            s.write("folder/dataset.yaml", card)
        return s.train("data.dataset=folder", f"data.root={s.tmp / 'folder'}", "data.num_labeled=null",
                       "data.crop_size=16")
    return case


def folder_without_images(s):
    s.write("folder/images/notes.txt", "no images")
    return folder("binary: true\n", images=(), masks=())(s)


def edited_split_list(s):
    (s.tmp / "voc").mkdir()
    s.write("splits/pascal/92/labeled.txt", "JPEGImages/2007_000032.jpg SegmentationClass/2007_000032.png\n")
    return s.train("data.dataset=pascal", f"data.root={s.tmp / 'voc'}", f"data.splits_dir={s.tmp / 'splits'}",
                   "data.split=92", "data.num_labeled=null")


# ---------------------------------------------------------------- checkpoint
def not_a_checkpoint(s):
    torch.save({"weight": torch.zeros(2)}, s.tmp / "w.pt")
    return ["eval", str(s.tmp / "w.pt")]


def corrupt_checkpoint(s):
    (s.tmp / "bad.pt").write_bytes(b"garbage" * 10)
    return ["eval", str(s.tmp / "bad.pt")]


def eval_other_dataset(s):
    root = camvid_tree(s.tmp / "camvid")
    return ["eval", str(s.ckpt), "data.dataset=camvid", f"data.root={root}", "data.num_labeled=null"]


# ---------------------------------------------------------------- command line
def predict_no_images(s):
    s.write("empty/readme.txt", "no images here")
    return ["predict", str(s.ckpt), str(s.tmp / "empty"), "--out", str(s.tmp / "pred")]


def predict_corrupt_image(s):
    s.image("in/a.png")
    (s.tmp / "in" / "b.png").write_bytes(b"nope")
    return ["predict", str(s.ckpt), str(s.tmp / "in"), "--out", str(s.tmp / "pred")]


def split_args(s, *extra, lines=4):
    """`data split` of a 4-line list train.txt (into tmp/split unless `extra` says otherwise)."""
    text = "".join(f"train/{i}.png trainannot/{i}.png\n" for i in range(lines))
    return ["data", "split", str(s.write("train.txt", text)), "--labeled", "1", "--out", str(s.tmp / "split"),
            *map(str, extra)]


def split_over_its_list(s):
    s.write("split/labeled.txt", "train/0.png trainannot/0.png\ntrain/1.png trainannot/1.png\n")
    return ["data", "split", str(s.tmp / "split" / "labeled.txt"), "--labeled", "1", "--out", str(s.tmp / "split"),
            "--overwrite"]


def split_duplicate_line(s):
    s.write("train.txt", "train/0.png trainannot/0.png\ntrain/1.png trainannot/1.png\ntrain/0.png trainannot/0.png\n")
    return ["data", "split", str(s.tmp / "train.txt"), "--labeled", "1", "--out", str(s.tmp / "split")]


def export_no_onnxruntime(s):
    import sys

    s.mp.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` raise ImportError
    return ["export", str(s.ckpt), "--format", "onnx"]


def export_mismatch(s):
    import semiseg.engine.export as export

    s.mp.setattr(export, "parity", lambda *args: [((1, 3, 32, 32), 0.5)])  # as if the file computed otherwise
    return ["export", str(s.ckpt), "--format", "torchscript", "--out", str(s.tmp / "m.pt")]


def predict_output_is_input(s):
    return ["predict", str(s.ckpt), str(s.image("a.png")), str(s.image("a.png.pred.png")), "--out", str(s.tmp)]


# ---------------------------------------------------------------- weights
def timm_unreachable(s):
    import timm

    import semiseg.models.weights as weights

    real = timm.create_model

    def create_model(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("offline")
        return real(name, pretrained=False, **kwargs)

    s.mp.setattr(weights.timm, "create_model", create_model)
    s.mp.setenv("HF_HUB_OFFLINE", "1")
    return s.train("model.pretrained=timm")


def weights_not_a_state_dict(s):
    torch.save({"a": [1, 2]}, s.tmp / "w.pth")
    return s.train(f"model.pretrained={s.tmp / 'w.pth'}")


def weights_of_another_encoder(s):
    import timm

    torch.save(timm.create_model("resnet18", features_only=True, pretrained=False).state_dict(), s.tmp / "r18.pth")
    return s.train(f"model.pretrained={s.tmp / 'r18.pth'}")


def weights_corrupt(s):
    (s.tmp / "w.pth").write_bytes(b"junk")
    return s.train(f"model.pretrained={s.tmp / 'w.pth'}")


class Row(NamedTuple):
    area: str
    id: str
    mistake: str  # the doc's first column, word for word
    message: str  # the doc's third column, word for word (`...` = a variable part)
    argv: Callable  # Setup -> the command line (setting up the mistake first)
    kind: str = "one_line"  # or "argparse": the parser's own error (it exits through SystemExit)


def train(*extra):
    return lambda s: s.train(*extra)


ROWS = [
    # config
    Row("config", "config_not_found", "Config file does not exist",
        "error: config file not found: .../nope.yaml", lambda s: s.train(config=s.tmp / "nope.yaml")),
    Row("config", "unknown_key_in_file", "Unknown key in a config file",
        "error: .../exp.yaml: unknown config key 'train.totl_iters' (did you mean 'total_iters'?)",
        unknown_key_in_file),
    Row("config", "unknown_key_override", "Unknown key on the command line",
        "error: command line: unknown config key 'train.totl_iters' (did you mean 'total_iters'?)",
        train("train.totl_iters=3")),
    Row("config", "unknown_method_key", "Unknown `method.*` key for the chosen method",
        "error: unknown config key 'method.treshold' (did you mean 'threshold'?) for method 'fixmatch'; "
        "valid keys: ...", train("method.name=fixmatch", "method.treshold=0.9")),
    Row("config", "wrong_type", "Value of the wrong type",
        "error: command line: invalid value for 'train.total_iters': Value 'many' of type 'str' could not be "
        "converted to Integer", train("train.total_iters=many")),
    Row("config", "missing_total_iters", "No `train.total_iters` anywhere",
        "error: missing required value 'train.total_iters' (set it in the config or as train.total_iters=N)",
        missing_total_iters),
    Row("config", "duplicate_key", "A key given twice in one YAML file",
        "error: .../exp.yaml line 3: key 'train.lr' appears twice (first on line 2); keep one",
        lambda s: s.train(config=s.write("exp.yaml", "train:\n  lr: 0.01\n  lr: 0.02\n"))),
    Row("config", "invalid_yaml", "Config file is not valid YAML",
        "error: .../exp.yaml line 2: not valid YAML (expected ',' or ']', but got '<stream end>')",
        lambda s: s.train(config=s.write("exp.yaml", "train: [1, 2\n"))),
    Row("config", "not_a_mapping", "Config file is a list, not a mapping",
        "error: .../exp.yaml: a config file must be a mapping of keys, got list",
        lambda s: s.train(config=s.write("exp.yaml", "- 1\n- 2\n"))),
    Row("config", "base_two_levels", "`_base_` that itself has a `_base_`",
        "error: .../a.yaml: `_base_` may only be used one level deep (named from .../exp.yaml)", base_two_levels),
    Row("config", "override_not_yaml", "Override value that is not valid YAML",
        "error: command line: cannot parse overrides: 'data.scale_range=[1, 2': value is not valid YAML "
        "(expected ',' or ']', but got '<stream end>')", train("data.scale_range=[1, 2")),
    Row("config", "lr_not_positive", "Learning rate <= 0",
        "error: invalid value for 'train.lr': -1.0 (allowed: > 0)", train("train.lr=-1")),
    Row("config", "lr_infinite", "Learning rate inf or nan",
        "error: invalid value for 'train.lr': inf (allowed: a finite number, > 0)", train("train.lr=inf")),
    Row("config", "weight_decay_negative", "Negative weight decay",
        "error: invalid value for 'train.weight_decay': -1.0 (allowed: >= 0)", train("train.weight_decay=-1")),
    Row("config", "crop_size_zero", "Crop size < 1",
        "error: invalid value for 'data.crop_size': 0 (allowed: >= 1, or null)", train("data.crop_size=0")),
    Row("config", "scale_range_reversed", "Scale range with lo > hi",
        "error: invalid value for 'data.scale_range': [2.0, 1.0] (allowed: two numbers [lo, hi] with 0 < lo <= hi)",
        train("data.scale_range=[2.0,1.0]")),
    Row("config", "output_stride", "Output stride other than 8, 16, 32",
        "error: invalid value for 'model.output_stride': 7 (allowed: 8, 16, 32)", train("model.output_stride=7")),
    Row("config", "eval_mode", "Unknown evaluation mode",
        "error: invalid value for 'eval.mode': 'on' (allowed: original, center_crop, resize, sliding_window, "
        "or null)", train("eval.mode=on")),
    Row("config", "amp_unknown", "Unknown mixed-precision mode",
        "error: invalid value for 'train.amp': 'fp8' (allowed: off, bf16, fp16, auto)", train("train.amp=fp8")),
    Row("config", "warmup_too_long", "Warm-up as long as the run",
        "error: train.warmup_iters (1) must be below train.total_iters (1): the warm-up ends on the poly rate of "
        "its last step", train("train.warmup_iters=1")),
    Row("config", "amp_fp16_on_cpu", "fp16 autocast without a GPU",
        "error: train.amp=fp16 needs a CUDA GPU; use train.amp=bf16 on CPU (or off)",
        train("train.amp=fp16", "device=cpu")),
    Row("config", "optimizer", "Unknown optimiser",
        "error: invalid value for 'train.optimizer': 'adam' (allowed: sgd, adamw)", train("train.optimizer=adam")),
    Row("config", "weak_pipeline", "Unknown weak pipeline",
        "error: invalid value for 'data.weak_pipeline': 'strong' (allowed: unimatch, cps, u2pl, or null)",
        train("data.weak_pipeline=strong")),
    Row("config", "micro_batch", "Micro-batch that does not divide the batch",
        "error: train.micro_batch_size=3 must divide the per-process batch total_batch_size / world size = "
        "4 / 1 = 4", train("train.micro_batch_size=3", "train.total_batch_size=4")),
    Row("config", "unknown_method", "Unknown method name",
        "error: unknown method 'fixmach' (did you mean 'fixmatch'?); valid methods: cpcl, cps, csl, dueb, "
        "fixmatch, mean_teacher, rrn, supervised, u2pl, unimatch, unimatch_v2", train("method.name=fixmach")),
    Row("config", "unknown_dataset", "Unknown dataset name",
        "error: unknown dataset 'camvidd' (did you mean 'camvid'?); valid datasets: ade20k, camvid, cityscapes, "
        "coco, folder, gta5, pascal, synthetic", train("data.dataset=camvidd")),
    Row("config", "unknown_target_dataset", "Unknown target dataset name",
        "error: data.target.dataset: unknown dataset 'cityscape' (did you mean 'cityscapes'?); valid datasets: "
        "ade20k, camvid, cityscapes, coco, folder, gta5, pascal, synthetic", train("data.target.dataset=cityscape")),
    Row("config", "synthetic_style", "Unknown synthetic style",
        "error: invalid value for 'data.synthetic.style': 'c' (allowed: a, b)", train("data.synthetic.style=c")),
    Row("config", "unknown_encoder", "Unknown encoder name",
        "error: unknown encoder 'resnet181' (did you mean 'resnet18'?); any timm model name works, e.g. "
        "resnet18, resnet50, mobilenetv3_large_100, tf_efficientnet_lite0 (see `semiseg list`)",
        train("model.encoder=resnet181")),
    Row("config", "unknown_model", "Unknown model name",
        "error: unknown model 'unet'; valid models: deeplabv3plus, dpt", train("model.name=unet")),
    Row("config", "dpt_needs_vit", "DPT with an encoder that is not a ViT",
        "error: encoder 'mobilenetv3_small_050' cannot be built as a ViT for the DPT head: ...",
        train("model.name=dpt")),
    Row("config", "method_choice", "A `method.*` value outside its choices",
        "error: invalid value for 'method.teacher': 'ema2'; choose one of none, ema",
        train("method.name=fixmatch", "method.teacher=ema2")),
    Row("config", "method_range", "A `method.*` value outside its range",
        "error: invalid value for 'method.threshold': 1.5 (allowed: 0 <= x <= 1)",
        train("method.name=fixmatch", "method.threshold=1.5")),
    Row("config", "supervised_loss", "Unknown supervised loss",
        "error: invalid value for 'method.supervised_loss': 'dice'; choose one of ce, ohem",
        train("method.supervised_loss=dice")),
    Row("config", "head_switched_off", "A method that reads a head which is switched off",
        "error: method 'needs_variance' reads the network's 'variance' output: switch it on with "
        "model.heads.variance (see docs/config.md)", needs_a_head),
    # data
    Row("data", "missing_root", "Dataset folder does not exist",
        "error: dataset folder not found: .../absent (dataset 'camvid'); pass data.root=/path/to/camvid",
        lambda s: s.train("data.dataset=camvid", f"data.root={s.tmp / 'absent'}", "data.num_labeled=null")),
    Row("data", "no_default_root", "Dataset without a default folder and no `data.root`",
        "error: dataset 'pascal' has no default folder; pass data.root=/path/to/pascal",
        train("data.dataset=pascal")),
    Row("data", "no_split_lists", "Dataset split by name without its split lists",
        "error: dataset 'pascal' needs the standard split lists: set data.splits_dir=.../splits (or the "
        "SEMISEG_SPLITS_DIR environment variable)",
        lambda s: s.train("data.dataset=pascal", f"data.root={s.tmp}", "data.split=1_3")),
    Row("data", "missing_list", "List file does not exist",
        "error: list file not found: .../nope.txt; set data.labeled_list to an existing list file",
        lambda s: s.camvid(f"data.labeled_list={s.tmp / 'nope.txt'}")[1]),
    Row("data", "empty_list", "List file with no entries",
        "error: list file .../train.txt has no entries (only blank lines or comments); add 'image mask' lines",
        camvid_edit(lambda root: (root / "train.txt").write_text("\n# nothing yet\n"))),
    Row("data", "list_not_utf8", "List file that is not UTF-8 text",
        "error: list file .../train.txt is not UTF-8 text; set data.labeled_list to an existing list file",
        camvid_edit(lambda root: (root / "train.txt").write_bytes(b"\xff\xfe\x00bad"))),
    Row("data", "list_three_fields", "List line with three fields (a path with a space)",
        "error: .../train.txt:1: expected 'image [mask]' (1 or 2 fields), got 3 fields; paths with spaces are "
        "not supported: fix or rename",
        camvid_edit(lambda root: (root / "train.txt").write_text("train/0.png trainannot/0.png extra\n"))),
    Row("data", "missing_image", "List line whose image is missing",
        "error: image file not found: .../train/1.png (listed at .../train.txt:2); check data.root or fix the "
        "list line", camvid_edit(lambda root: (root / "train" / "1.png").unlink())),
    Row("data", "missing_mask", "List line whose mask is missing",
        "error: mask file not found: .../trainannot/1.png (listed at .../train.txt:2); check data.root or fix "
        "the list line", camvid_edit(lambda root: (root / "trainannot" / "1.png").unlink())),
    Row("data", "unreadable_image", "Image that cannot be decoded",
        "error: cannot read image .../train/1.png (listed at .../train.txt:2): UnidentifiedImageError: ...; "
        "re-export the file or remove its line from the list",
        camvid_edit(lambda root: (root / "train" / "1.png").write_bytes(b"not a png at all"))),
    Row("data", "mask_size_mismatch", "Mask of another size than its image",
        "error: mask .../trainannot/0.png is 10x10 but its image .../train/0.png is 32x24 (listed at "
        ".../train.txt:1); masks must have the image's size",
        camvid_edit(save_mask("trainannot/0.png", np.zeros((10, 10), np.uint8)))),
    Row("data", "label_outside_classes", "Mask value outside the classes",
        "error: mask .../trainannot/1.png (listed at .../train.txt:2) has values 40 outside 0..10 after the "
        "dataset's label map (C = 11, 255 = ignore); map them to 255 or fix num_classes",
        camvid_edit(save_mask("trainannot/1.png", np.full((24, 32), 40, np.uint8)))),
    Row("data", "rgb_mask", "Colour (RGB) mask instead of class ids",
        "error: mask .../trainannot/1.png (listed at .../train.txt:2) is a RGB image; masks must be "
        "single-channel class-id PNGs (mode L or P, pixel value = class id, 255 = ignore), not colour "
        "renderings: convert it", camvid_edit(save_mask("trainannot/1.png", np.zeros((24, 32, 3), np.uint8)))),
    Row("data", "labeled_line_without_mask", "Labeled list line without a mask",
        "error: .../train.txt:2: labeled entry 'train/1.png' has no mask path; write 'image mask' on every line "
        "of a labeled list",
        camvid_edit(lambda root: (root / "train.txt").write_text("train/0.png trainannot/0.png\ntrain/1.png\n"))),
    Row("data", "labeled_and_unlabeled", "Image in both the labeled and the unlabeled list",
        "error: 1 image(s) are both labeled and unlabeled, e.g. train/0.png (.../train.txt:1 and .../unl.txt:1); "
        "remove them from the unlabeled list", both_labeled_and_unlabeled),
    Row("data", "no_val_list", "Dataset without a val list of its own (GTA5), in a one-dataset run",
        "error: dataset 'gta5' has no val list of its own; set data.val_list=<list file> ('image mask' per line), "
        "or make it the source of a cross-domain run (data.target.dataset)",
        lambda s: s.train("data.dataset=gta5", f"data.root={s.image('gta5/images/0.png').parents[1]}",
                          "data.num_labeled=null")),
    Row("data", "target_other_classes", "Cross-domain target with other classes than the source",
        "error: data.dataset 'synthetic' (7 classes) and data.target.dataset 'cityscapes' (19 classes) have "
        "different classes: class 0 is 'background' in synthetic, 'road' in cityscapes; a cross-domain run needs "
        "a target with the source's classes, in the same order", train("data.target.dataset=cityscapes")),
    Row("data", "target_key_without_dataset", "A `data.target.*` key without `data.target.dataset`",
        "error: data.target.root is set but data.target.dataset is not: name the target dataset "
        "(data.target.dataset=...) or unset data.target.*", train("data.target.root=/data/cityscapes")),
    Row("data", "source_list_in_cross_domain_run", "`data.val_list` or `data.unlabeled_list` in a cross-domain run",
        "error: data.val_list does not apply to a cross-domain run (data.target.dataset=synthetic): the val images "
        "come from the target; set data.target.val_list instead",
        train("data.target.dataset=synthetic", "data.val_list=val.txt")),
    Row("data", "missing_target_root", "Target dataset folder does not exist",
        "error: dataset folder not found: .../absent (dataset 'camvid'); pass data.target.root=/path/to/camvid",
        lambda s: s.camvid("data.target.dataset=camvid", f"data.target.root={s.tmp / 'absent'}")[1]),
    Row("data", "num_labeled_too_many", "More labeled images asked for than the list has",
        "error: data.num_labeled=99 but the labeled list has 4 images; use 1..4", train("data.num_labeled=99")),
    Row("data", "unlabeled_batch_too_small", "Unlabeled batch too small for CutMix",
        "error: each forward pass gets 1 unlabeled image(s) (train.unlabeled_batch_size=1 over 1 passes); CutMix "
        "needs at least 2 (a sample's partner is another sample of the same pass)",
        train("method.name=unimatch", "train.unlabeled_batch_size=1")),
    Row("data", "batch_vs_world_size", "Batch not divisible by the number of processes",
        "error: train.total_batch_size=8 is not divisible by the world size 3; use a multiple of 3 (it is the "
        "global batch, over all processes)", world_size_three),
    Row("data", "folder_no_card", "Folder dataset without its dataset card",
        "error: dataset card not found: .../folder/dataset.yaml; the folder dataset reads its classes from it: write "
        "dataset.yaml in data.root with classes: [names] or binary: true (docs/datasets.md, \"Your own folder of "
        "images\")", folder()),
    Row("data", "folder_card_unknown_key", "Dataset card with an unknown key",
        "error: .../folder/dataset.yaml: unknown key 'clases' (did you mean 'classes'?); a dataset card has name, "
        "classes, palette, ignore, colors, binary, val_fraction", folder("clases: [sky, tree]\n")),
    Row("data", "folder_card_wrong_type", "Dataset card value of the wrong type",
        "error: .../folder/dataset.yaml: 'classes' must be a list of class names, got str 'sky'",
        folder("classes: sky\n")),
    Row("data", "folder_card_palette_length", "Dataset card palette of another length than its classes",
        "error: .../folder/dataset.yaml: 'palette' has 2 colours for 3 classes; give one [R, G, B] per class, in the "
        "order of classes (or leave palette out)",
        folder("classes: [sky, tree, road]\npalette: [[0, 0, 0], [0, 128, 0]]\n")),
    Row("data", "folder_no_images", "Folder dataset without images",
        "error: .../folder/images holds no images (...): the folder dataset reads its images from data.root/images "
        "and their masks from data.root/masks (matched by file name; an image without a mask is unlabeled)",
        folder_without_images),
    Row("data", "folder_mask_without_image", "Mask without its image in a folder dataset",
        "error: mask .../folder/masks/d.png has no image of the same name ('d.*') in .../folder/images; add the "
        "image or remove the mask", folder("binary: true\n", masks=("a", "b", "d"))),
    Row("data", "folder_unknown_colour", "Colour mask with a colour the dataset card does not name",
        "error: mask .../folder/masks/....png (listed at .../folder/images...) has the colour 0,0,255 (first at "
        "x=0, y=0) that the colors of .../folder/dataset.yaml do not name; add '0,0,255: <class or ignore>' to its "
        "colors, or repaint those pixels",
        folder("classes: [sky, tree]\ncolors:\n  '0,0,0': sky\n  '0,128,0': tree\n", masks=("a", "b", "c"),
               mask=np.full((16, 16, 3), (0, 0, 255), np.uint8))),
    Row("data", "edited_split_list", "Published split list that is not the published one",
        "error: split list .../splits/pascal/92/labeled.txt is not the published pascal/92/labeled.txt (SHA-256 "
        "..., published 8a02aa6a1253178b): copy it again from the published splits; an edited list needs a name "
        "of its own (a split folder of another name, or data.labeled_list), or set data.verify_splits=false",
        edited_split_list),
    # checkpoint
    Row("checkpoint", "checkpoint_missing", "Checkpoint file does not exist",
        "error: semiseg checkpoint not found: .../nope.pt", lambda s: ["eval", str(s.tmp / "nope.pt")]),
    Row("checkpoint", "resume_missing", "`--resume` path does not exist",
        "error: semiseg checkpoint not found: .../nope.pt", lambda s: s.train("--resume", s.tmp / "nope.pt")),
    Row("checkpoint", "not_a_checkpoint", "A weights file that is not a semiseg checkpoint",
        "error: .../w.pt: not a semiseg checkpoint (no 'method'/'config' entries)", not_a_checkpoint),
    Row("checkpoint", "corrupt_checkpoint", "Corrupt or truncated checkpoint",
        "error: .../bad.pt: not a readable semiseg checkpoint (UnpicklingError: ...", corrupt_checkpoint),
    Row("checkpoint", "other_class_count", "Checkpoint of another class count",
        "error: .../latest.pt: checkpoint model has 7 classes, the dataset has 11; use a checkpoint trained on "
        "this dataset (or set data.dataset to match)", eval_other_dataset),
    Row("checkpoint", "other_encoder", "Checkpoint of another encoder",
        "error: .../latest.pt: checkpoint encoder is 'mobilenetv3_small_050', the config asks for 'resnet18'; "
        "set model.encoder=mobilenetv3_small_050", lambda s: ["eval", str(s.ckpt), "model.encoder=resnet18"]),
    Row("checkpoint", "resume_other_model", "Resume with another model setting",
        "error: cannot resume from .../latest.pt: the config differs from the checkpoint's in "
        "model.aspp_channels: checkpoint 8, config 16. Resume with the original values or use a new output_dir",
        lambda s: s.train("model.aspp_channels=16", "--resume", s.ckpt)),
    Row("checkpoint", "resume_other_data", "Resume with another data stream",
        "error: cannot resume from .../latest.pt: the config differs from the checkpoint's in data.crop_size: "
        "checkpoint 32, config 16. Resume with the original values or use a new output_dir",
        lambda s: s.train("data.crop_size=16", "--resume", s.ckpt)),
    Row("checkpoint", "resume_other_method", "Resume with another method",
        "error: cannot resume from .../latest.pt: the config differs from the checkpoint's in method.name: "
        "checkpoint 'supervised', config 'fixmatch'. Resume with the original values or use a new output_dir",
        lambda s: s.train("method.name=fixmatch", "--resume", s.ckpt)),
    Row("checkpoint", "unknown_network", "`--network` the checkpoint does not hold",
        "error: unknown network 'teacher' for method 'Supervised'; this checkpoint holds: model",
        lambda s: ["eval", str(s.ckpt), "--network", "teacher"]),
    # command line
    Row("cli", "unknown_subcommand", "Unknown subcommand",
        "error: argument COMMAND: invalid choice: 'trian' (choose from 'list', 'train', 'eval', "
        "'predict', 'export', 'show', 'demo', 'bench', 'report', 'data') (see `semiseg --help`)",
        lambda s: ["trian", SUP], kind="argparse"),
    Row("cli", "unknown_option", "Unknown option",
        "error: unrecognized arguments: --bogus (see `semiseg --help`)", lambda s: s.train("--bogus"),
        kind="argparse"),
    Row("cli", "abbreviated_option", "Abbreviated option (options are never guessed)",
        "error: unrecognized arguments: --resum (see `semiseg --help`)", lambda s: s.train("--resum", "auto"),
        kind="argparse"),
    Row("cli", "bad_option_value", "Option value outside its choices",
        "error: argument --mode: invalid choice: 'whole' (choose from 'original', 'center_crop', "
        "'resize', 'sliding_window') (see `semiseg eval --help`)", lambda s: ["eval", str(s.ckpt), "--mode", "whole"],
        kind="argparse"),
    Row("cli", "override_without_equals", "Override without `=`",
        "error: override 'train.total_iters' is not of the form key=value (e.g. train.total_iters=100)",
        train("train.total_iters")),
    Row("cli", "section_given_a_value", "A section given a value",
        "error: command line: 'train' is a section, not a value: set one of its keys, e.g. train.<key>=... "
        "(see docs/config.md)", train("train=3")),
    Row("cli", "predict_input_missing", "`predict` input that does not exist",
        "error: input not found: .../nope.png",
        lambda s: ["predict", str(s.ckpt), str(s.tmp / "nope.png"), "--out", str(s.tmp / "pred")]),
    Row("cli", "predict_no_images", "`predict` on a folder without images",
        "error: no images found in .../empty (looked for .bmp, .jpeg, .jpg, .png, .tif, .tiff, .webp; files "
        "named *.pred.png or *.overlay.jpg are earlier predictions and are skipped)", predict_no_images),
    Row("cli", "predict_out_is_file", "`predict --out` that is a file",
        "error: --out .../out.txt is an existing file, not a folder: give a folder for the predictions",
        lambda s: ["predict", str(s.ckpt), str(s.image("in/a.png")), "--out", str(s.write("out.txt", "keep"))]),
    Row("cli", "predict_output_is_input", "`predict` output that would replace an input",
        "error: the prediction for .../a.png would be written to .../a.png.pred.png, which is the input "
        ".../a.png.pred.png: pass --out a folder of its own, or rename the image", predict_output_is_input),
    Row("cli", "predict_corrupt_image", "`predict` on an image that cannot be decoded",
        "error: .../b.png: unreadable or corrupt image (UnidentifiedImageError)", predict_corrupt_image),
    Row("cli", "predict_pattern_matches_nothing", "`predict` pattern that matches no image",
        "error: no images match the pattern .../photos/**/*.tif (looked for .bmp, .jpeg, .jpg, .png, .tif, .tiff, "
        ".webp; ** matches any number of folders)",
        lambda s: ["predict", str(s.ckpt), str(s.image("photos/a.png").parent / "**" / "*.tif"), "--out",
                   str(s.tmp / "pred")]),
    Row("cli", "predict_batch_size", "`predict --batch-size` below 1",
        "error: --batch-size must be >= 1 (images per forward pass), got 0",
        lambda s: ["predict", str(s.ckpt), str(s.image("in/a.png")), "--out", str(s.tmp / "pred"),
                   "--batch-size", "0"]),
    Row("cli", "export_format", "`export --format` outside its choices",
        "error: argument --format: invalid choice: 'tflite' (choose from 'onnx', 'torchscript') (see `semiseg "
        "export --help`)", lambda s: ["export", str(s.ckpt), "--format", "tflite"], kind="argparse"),
    Row("cli", "export_missing_folder", "`export --out` in a folder that does not exist",
        "error: --out .../no/m.onnx: the folder .../no does not exist; create it or give another --out",
        lambda s: ["export", str(s.ckpt), "--format", "torchscript", "--out", str(s.tmp / "no" / "m.onnx")]),
    Row("cli", "export_output_exists", "`export` to a file that exists",
        "error: .../m.pt already exists; pass --overwrite to replace it, or give another --out",
        lambda s: ["export", str(s.ckpt), "--format", "torchscript", "--out", str(s.write("m.pt", "keep"))]),
    Row("cli", "export_over_checkpoint", "`export --out` that is the checkpoint",
        "error: --out .../latest.pt is the checkpoint itself; give another file name",
        lambda s: ["export", str(s.ckpt), "--format", "torchscript", "--out", str(s.ckpt), "--overwrite"]),
    Row("cli", "export_without_extra", "`export --format onnx` without the `export` extra",
        "error: --format onnx needs the packages onnx and onnxruntime (onnxruntime is missing): pip install "
        "'semiseg[export]'", export_no_onnxruntime),
    Row("cli", "export_mismatch", "Exported file that does not compute what PyTorch does",
        "error: the exported torchscript model differs from PyTorch by ... (> 0.0001) at input ...; nothing was "
        "written", export_mismatch),
    Row("cli", "data_check_unknown_target", "`data check` on a name that is neither a config file nor a dataset",
        "error: no config file or dataset named 'camvidd' (did you mean 'camvid'?); give a config file or one of "
        "the datasets: ade20k, camvid, cityscapes, coco, folder, gta5, pascal, synthetic",
        lambda s: ["data", "check", "camvidd"]),
    Row("cli", "data_check_no_files", "`data check` on a dataset without files",
        "error: dataset 'synthetic' has no files to check (it is rendered in memory); data check reads datasets of "
        "list files", lambda s: ["data", "check", "synthetic"]),
    Row("cli", "data_check_missing_root", "`data check` on a dataset folder that does not exist",
        "error: dataset folder not found: .../absent (dataset 'camvid'); pass data.root=/path/to/camvid",
        lambda s: ["data", "check", "camvid", "--root", str(s.tmp / "absent")]),
    Row("cli", "data_check_two_datasets", "`data check` on a config with a source and a target dataset",
        "error: data check reads one dataset, this config has two (data.target.dataset=camvid); check each: "
        "semiseg data check camvid --root ... and semiseg data check camvid --root ...",
        lambda s: ["data", "check", "camvid", "data.target.dataset=camvid"]),
    Row("cli", "data_split_missing_list", "`data split` on a list that does not exist",
        "error: list file not found: .../nope.txt; fix the path",
        lambda s: ["data", "split", str(s.tmp / "nope.txt"), "--labeled", "1/8", "--out", str(s.tmp / "split")]),
    Row("cli", "data_split_unparsable", "`data split --labeled` that is neither a fraction nor a count",
        "error: --labeled 'half' is neither a fraction like 1/8 nor a count like 92",
        lambda s: split_args(s, "--labeled", "half")),
    Row("cli", "data_split_zero", "`data split --labeled 0`",
        "error: --labeled 0: label at least one image (a count N >= 1 or a fraction like 1/8)",
        lambda s: split_args(s, "--labeled", "0")),
    Row("cli", "data_split_too_many", "`data split --labeled` with more images than the list has",
        "error: --labeled 99 but .../train.txt has 4 images; use 1..4 (or a fraction like 1/8)",
        lambda s: split_args(s, "--labeled", "99")),
    Row("cli", "data_split_out_is_file", "`data split --out` that is a file",
        "error: --out .../out.txt is an existing file, not a folder: give a folder for labeled.txt and unlabeled.txt",
        lambda s: split_args(s, "--out", s.write("out.txt", "keep"))),
    Row("cli", "data_split_out_holds_split", "`data split --out` that already holds a split",
        "error: --out .../split already holds labeled.txt; pass --overwrite to replace it, or pick another folder",
        lambda s: s.write("split/labeled.txt", "train/9.png trainannot/9.png\n") and split_args(s)),
    Row("cli", "data_split_over_its_list", "`data split` that would write over the list it splits",
        "error: --out .../split would write labeled.txt over the list being split (.../labeled.txt); pick another "
        "folder", split_over_its_list),
    Row("cli", "data_split_duplicate", "`data split` on a list with an image twice",
        "error: .../train.txt:3: image train/0.png is listed again (first at line 1); delete one of the two lines "
        "before splitting (semiseg data check lists them all)", split_duplicate_line),
    # filesystem
    Row("filesystem", "output_dir_is_file", "`output_dir` is a file",
        "error: output_dir .../notadir is a file, not a folder; pick another output_dir",
        lambda s: s.train(out=s.write("notadir", "keep"))),
    Row("filesystem", "run_dir_holds_run", "`output_dir` already holds a run",
        "error: .../run holds a run (latest.pt at iteration 1); continue it with --resume auto, or start over "
        "with --overwrite (or pick another output_dir)", lambda s: s.run_dir() and s.train()),
    Row("filesystem", "overwrite_and_resume_auto", "`--overwrite` together with `--resume auto`",
        "error: --overwrite starts the run in output_dir over and --resume auto continues it: give one of the two",
        lambda s: s.run_dir() and s.train("--overwrite", "--resume", "auto")),
    Row("filesystem", "overwrite_deletes_resume", "`--overwrite` would delete the checkpoint `--resume` names",
        "error: --overwrite would delete .../run/latest.pt, the checkpoint --resume names; copy it out of "
        ".../run first, or drop --overwrite",
        lambda s: s.train("--overwrite", "--resume", s.run_dir() / "latest.pt")),
    # benchmarks
    Row("bench", "suite_unknown_key", "Suite file with an unknown key",
        "error: .../suite.yaml: unknown key 'seed' (keys: dataset_root, seeds, overrides, predictions, cells)",
        lambda s: ["bench", "quality", str(s.write("suite.yaml", "seed: [0]\ncells: {}\n"))]),
    Row("bench", "suite_config_missing", "Suite cell whose config does not exist",
        "error: .../suite.yaml: 'cells.fixmatch.config' names .../fixmatch.yaml, which does not exist",
        lambda s: ["bench", "quality", str(s.write("suite.yaml", "cells:\n  fixmatch: configs/fixmatch.yaml\n"))]),
    Row("bench", "suite_unknown_cell", "`bench quality --cells` with a cell the suite lacks",
        "error: .../suite.yaml: no cell 'cps' (cells: supervised)", lambda s: [
            "bench", "quality", str(s.write("suite.yaml", f"cells:\n  supervised: {SUP}\n")), "--cells", "cps"]),
    Row("bench", "report_not_json", "`report` on a result file that is not JSON",
        "error: .../seed0.json: not valid JSON (...); re-run the benchmark that wrote it",
        lambda s: ["report", str(s.write("results/seed0.json", "{")), "--out", str(s.tmp / "report")]),
    # weights
    Row("weights", "timm_download_failed", "`model.pretrained=timm` and the hub cannot be reached",
        "error: model.pretrained=timm: could not get the weights of mobilenetv3_small_050 (OSError: offline); "
        "connect to the internet (and unset HF_HUB_OFFLINE), or download them once and set "
        "model.pretrained=/path/to/weights.pth (a local file)", timm_unreachable),
    Row("weights", "imagenet_other_encoder", "`model.pretrained=imagenet` for another encoder",
        "error: model.pretrained=imagenet: no bundled weights for 'mobilenetv3_small_050' (only "
        "tf_efficientnet_lite0); give a local weights file or `timm` (needs the hub)",
        train("model.pretrained=imagenet")),
    Row("weights", "weights_file_missing", "Weights file does not exist",
        "error: model.pretrained weights file not found: .../r34.pth (use a file path, `imagenet` or none)",
        lambda s: s.train(f"model.pretrained={s.tmp / 'r34.pth'}")),
    Row("weights", "weights_not_state_dict", "Weights file that holds no tensors",
        "error: .../w.pth: not a state dict of tensors (expected a torch/timm weights file)",
        weights_not_a_state_dict),
    Row("weights", "weights_other_encoder", "Weights file of another encoder",
        "error: .../r18.pth: weights lack ... encoder tensors (first: conv_stem.weight); is this file for "
        "another encoder?", weights_of_another_encoder),
    Row("weights", "weights_corrupt", "Corrupt weights file",
        "error: .../w.pth: not a readable model.pretrained weights file (...)", weights_corrupt),
]


def pattern(message: str) -> re.Pattern:
    """The documented message as a whole-line pattern: `...` matches any text."""
    return re.compile("".join(".*" if part == "..." else re.escape(part) for part in re.split(r"(\.\.\.)", message)))


def snapshot(*roots: Path) -> dict:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for root in roots for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """One tiny supervised run (1 iteration, 7 classes, mobilenetv3_small_050): its latest.pt."""
    out = tmp_path_factory.mktemp("tiny_run")
    setup = Setup(out, out, None)
    assert main(setup.train(out=out)) == 0
    return out / "latest.pt"


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_bad_input(row, checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    argv = [str(a) for a in row.argv(Setup(tmp_path, checkpoint, monkeypatch))]
    before = snapshot(tmp_path, checkpoint.parent)
    capsys.readouterr()
    if row.kind == "argparse":
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        code = exit_info.value.code
    else:
        code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert pattern(row.message).fullmatch(lines[0]), (row.message, lines[0])
    after = snapshot(tmp_path, checkpoint.parent)
    assert {path: after.get(path) for path in before} == before, "a file that existed before changed"


def test_ctrl_c_exits_130(monkeypatch, capsys):
    import semiseg.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_list", interrupted)
    assert main(["list"]) == 130
    assert capsys.readouterr().err.splitlines() == ["interrupted; the last checkpoint (if any) is intact"]


def doc_rows() -> list:
    """(area heading, mistake, message) of every table row of docs/errors.md."""
    rows, area = [], None
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            area = line[3:].strip()
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]] if line.startswith("|") else []
        if len(cells) == 3 and cells[0] not in ("Mistake", "---"):
            message = re.fullmatch(r"``\s?(.*?)\s?``", cells[2])
            assert message, f"docs/errors.md: the message cell must be a ``code span``: {line}"
            rows.append((area, cells[0], message.group(1)))
    return rows


def test_doc_and_table_agree():
    documented = doc_rows()
    assert len(documented) >= 40
    areas = {"config": "Config", "data": "Data", "checkpoint": "Checkpoints", "cli": "Command line",
             "filesystem": "Files and folders", "bench": "Benchmarks and reports", "weights": "Pretrained weights"}
    assert sorted(documented) == sorted((areas[r.area], r.mistake, r.message) for r in ROWS)
    assert len({row.id for row in ROWS}) == len(ROWS)
