"""The command line: end-to-end train/eval/predict on tiny data, and one clear line per bad input."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from semiseg.cli import main

TINY_MODEL = ["model.encoder=resnet18", "model.pretrained=null", "model.aspp_channels=8", "model.decoder_channels=8",
              "model.low_level_channels=8", "data.num_workers=0", "train.total_batch_size=2",
              "train.unlabeled_batch_size=2", "train.log_every=1"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def make_camvid_tree(root, n_train=4, n_val=2, size=(24, 32)):
    """A CamVid-like folder: train/val images, label PNGs with values 0..10 and 11 (void)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / f"{split}annot").mkdir(exist_ok=True)
        lines = []
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / split / f"{i}.png")
            Image.fromarray(rng.integers(0, 12, size, dtype=np.uint8)).save(root / f"{split}annot" / f"{i}.png")
            lines.append(f"{split}/{i}.png {split}annot/{i}.png")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def camvid_args(root, out, *extra):
    return ["train", "configs/synthetic/supervised.yaml", f"data.root={root}", "data.dataset=camvid",
            "data.num_labeled=null", "data.crop_size=16", "data.scale_range=[1.0,1.0]", f"output_dir={out}",
            "train.total_iters=2", "--no-progress", *TINY_MODEL, *extra]


@pytest.fixture(autouse=True)
def repo_cwd(monkeypatch):
    from conftest import REPO

    monkeypatch.chdir(REPO)


def test_train_eval_predict_synthetic(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run(capsys, "train", "configs/synthetic/fixmatch.yaml", f"output_dir={out}",
                            "train.total_iters=3", "train.eval_every=2", "data.synthetic.num_train=12",
                            "data.synthetic.num_val=3", "data.num_labeled=4", "--no-progress", *TINY_MODEL)
    assert code == 0, err
    for name in ("latest.pt", "best.pt", "config.yaml", "run_info.json", "metrics.jsonl", "summary.json"):
        assert (out / name).is_file(), name
    info = json.loads((out / "run_info.json").read_text())
    assert info["seed"] == 0 and info["versions"]["torch"]
    kinds = [json.loads(line)["kind"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert kinds.count("val") == 2 and "summary" in kinds  # at iteration 2 and at the end
    ckpt = torch.load(out / "latest.pt", weights_only=True)
    assert ckpt["step"] == 3

    code, stdout, err = run(capsys, "eval", out / "latest.pt", "--mode", "sliding_window", "eval.crop_size=32")
    assert code == 0, err
    assert "mIoU" in stdout and "triangle" in stdout

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.full((40, 50, 3), 120, np.uint8)).save(images / "a.jpg")
    code, stdout, err = run(capsys, "predict", out / "best.pt", images, "--out", tmp_path / "pred")
    assert code == 0, err
    pred = Image.open(tmp_path / "pred" / "a.jpg.pred.png")
    assert pred.mode == "P" and pred.size == (50, 40)
    assert (tmp_path / "pred" / "a.jpg.overlay.jpg").is_file()


def test_resume_auto_continues_from_latest(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "configs/synthetic/supervised.yaml", f"output_dir={out}", "data.synthetic.num_train=8",
            "data.synthetic.num_val=2", "data.num_labeled=4", "--no-progress", *TINY_MODEL]
    assert run(capsys, *base, "train.total_iters=2")[0] == 0
    code, stdout, err = run(capsys, *base, "train.total_iters=4", "--resume", "auto")
    assert code == 0, err
    assert "resumed from" in stdout and "at iteration 2" in stdout
    assert torch.load(out / "latest.pt", weights_only=True)["step"] == 4


def test_eval_and_predict_a_named_network(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", "configs/synthetic/mean_teacher.yaml", f"output_dir={out}",
                       "train.total_iters=2", "train.eval_every=100", "data.synthetic.num_train=8",
                       "data.synthetic.num_val=2", "data.num_labeled=4", "--no-progress", *TINY_MODEL)
    assert code == 0, err
    for network in ("model", "teacher"):
        code, stdout, err = run(capsys, "eval", out / "latest.pt", "--network", network)
        assert code == 0, err
        assert f"network {network}" in stdout
    Image.fromarray(np.full((20, 24, 3), 90, np.uint8)).save(tmp_path / "x.png")
    code, _, err = run(capsys, "predict", out / "latest.pt", tmp_path / "x.png", "--out", tmp_path / "p",
                       "--network", "teacher")
    assert code == 0, err
    assert Image.open(tmp_path / "p" / "x.png.pred.png").size == (24, 20)
    code, _, err = run(capsys, "eval", out / "latest.pt", "--network", "student")
    assert_one_line_error(code, err, "unknown network 'student'", "model, teacher")


def test_list(capsys):
    code, stdout, _ = run(capsys, "list")
    assert code == 0
    for name in ("supervised", "fixmatch", "synthetic", "camvid", "pascal", "cityscapes", "coco", "ade20k",
                 "tf_efficientnet_lite0"):
        assert name in stdout


@pytest.mark.parametrize("override, fragments", [
    ("train.totl_iters=3", ["unknown config key 'train.totl_iters'", "total_iters"]),
    ("train.total_iters=many", ["invalid value for 'train.total_iters'"]),
    ("method.name=fixmach", ["unknown method 'fixmach'", "fixmatch", "supervised"]),
    ("data.dataset=camvidd", ["unknown dataset 'camvidd'", "camvid", "pascal"]),
    ("model.encoder=resnet181", ["unknown encoder 'resnet181'", "resnet18"]),
])
def test_bad_config_values(tmp_path, capsys, override, fragments):
    code, _, err = run(capsys, "train", "configs/synthetic/supervised.yaml", f"output_dir={tmp_path}",
                       "train.total_iters=2", "--no-progress", *TINY_MODEL, override)
    assert_one_line_error(code, err, *fragments)


def test_missing_image(tmp_path, capsys):
    root = make_camvid_tree(tmp_path / "camvid")
    (root / "train" / "2.png").unlink()
    code, _, err = run(capsys, *camvid_args(root, tmp_path / "out"))
    assert_one_line_error(code, err, "2.png")


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_image(tmp_path, capsys, workers):
    root = make_camvid_tree(tmp_path / "camvid")
    (root / "train" / "1.png").write_bytes(b"not a png at all")
    code, _, err = run(capsys, *camvid_args(root, tmp_path / "out", f"data.num_workers={workers}"))
    assert_one_line_error(code, err, "1.png")


def test_mask_size_mismatch(tmp_path, capsys):
    root = make_camvid_tree(tmp_path / "camvid")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "trainannot" / "0.png")
    code, _, err = run(capsys, *camvid_args(root, tmp_path / "out"))
    assert_one_line_error(code, err, "0.png")


def test_label_outside_classes(tmp_path, capsys):
    root = make_camvid_tree(tmp_path / "camvid")
    Image.fromarray(np.full((24, 32), 40, np.uint8)).save(root / "trainannot" / "3.png")
    code, _, err = run(capsys, *camvid_args(root, tmp_path / "out"))
    assert_one_line_error(code, err, "3.png", "40")


def test_empty_labeled_list(tmp_path, capsys):
    root = make_camvid_tree(tmp_path / "camvid")
    (root / "train.txt").write_text("\n")
    code, _, err = run(capsys, *camvid_args(root, tmp_path / "out"))
    assert_one_line_error(code, err, "train.txt")


def test_checkpoint_with_other_class_count(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", "configs/synthetic/supervised.yaml", f"output_dir={out}",
                       "train.total_iters=1", "data.synthetic.num_train=4", "data.synthetic.num_val=1",
                       "data.num_labeled=2", "--no-progress", *TINY_MODEL)
    assert code == 0, err
    root = make_camvid_tree(tmp_path / "camvid")
    code, _, err = run(capsys, "eval", out / "latest.pt", "data.dataset=camvid", f"data.root={root}",
                       "data.num_labeled=null")
    assert_one_line_error(code, err, "7 classes", "11")


def test_checkpoint_intact_after_a_failure(tmp_path, capsys):
    """A run that dies on bad data leaves the last good checkpoint loadable."""
    root = make_camvid_tree(tmp_path / "camvid", n_train=2)
    out = tmp_path / "out"
    assert run(capsys, *camvid_args(root, out))[0] == 0
    before = (out / "latest.pt").read_bytes()
    (root / "train" / "0.png").write_bytes(b"garbage")
    (root / "train" / "1.png").write_bytes(b"garbage")
    code, _, err = run(capsys, *camvid_args(root, out, "train.total_iters=4"), "--resume", "auto")
    assert_one_line_error(code, err, ".png")
    assert (out / "latest.pt").read_bytes() == before
    assert torch.load(out / "latest.pt", weights_only=True)["step"] == 2


def test_timm_weights_unavailable_is_one_line(tmp_path, capsys, monkeypatch):
    import timm

    import semiseg.models.weights as weights

    real = timm.create_model
    calls = []

    def create_model(name, pretrained=False, **kwargs):
        calls.append((name, pretrained))
        if pretrained:
            raise OSError("offline")
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(weights.timm, "create_model", create_model)
    code, _, err = run(capsys, "train", "configs/synthetic/supervised.yaml", f"output_dir={tmp_path}",
                       "train.total_iters=1", "--no-progress", *TINY_MODEL, "model.pretrained=timm")
    assert_one_line_error(code, err, "model.pretrained=timm", "resnet18", "OSError: offline", "local file")
    assert ("resnet18", True) in calls  # the CLI no longer refuses the hub up front
