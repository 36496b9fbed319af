"""Every option's range is checked when the config is built: one line naming key, value and range."""

import os

import pytest

from semiseg.cli import main
from semiseg.config import load_config
from semiseg.errors import SemisegError

REQUIRED = ["train.total_iters=5"]


@pytest.fixture(autouse=True)
def repo_cwd(monkeypatch):
    from conftest import REPO

    monkeypatch.chdir(REPO)


@pytest.mark.parametrize("override, shown", [
    ("train.momentum=-0.5", "-0.5"),
    ("train.weight_decay=-1e-4", "-0.0001"),
    ("train.lr=0", "0.0"),
    ("train.lr=-0.01", "-0.01"),
    ("train.lr=.nan", "nan"),
    ("train.lr=.inf", "inf"),
    ("train.lr_multi=0", "0.0"),
    ("train.poly_power=-1", "-1.0"),
    ("train.eval_every=-1", "-1"),
    ("train.checkpoint_every=-2", "-2"),
    ("train.log_every=-1", "-1"),
    ("train.micro_batch_size=0", "0"),
    ("train.unlabeled_batch_size=0", "0"),
    ("train.unlabeled_batch_size=-4", "-4"),
    ("train.amp=fp32", "'fp32'"),
    ("train.optimizer=adam", "'adam'"),
    ("data.num_workers=-1", "-1"),
    ("data.scale_range=[0.5]", "[0.5]"),
    ("data.scale_range=[2.0,0.5]", "[2.0, 0.5]"),
    ("data.scale_range=[0,1.0]", "[0.0, 1.0]"),
    ("data.scale_range=[0.5,1.0,2.0]", "[0.5, 1.0, 2.0]"),
    ("data.strong_blur_sigma=[0.1]", "[0.1]"),
    ("data.strong_blur_sigma=[2.0,0.1]", "[2.0, 0.1]"),
    ("data.strong_blur_sigma=[-0.1,2.0]", "[-0.1, 2.0]"),
    ("data.synthetic.image_size=0", "0"),
    ("data.synthetic.num_train=0", "0"),
    ("data.synthetic.num_val=0", "0"),
    ("data.crop_size=0", "0"),
    ("data.labeled_fraction=0", "0.0"),
    ("data.labeled_fraction=1.5", "1.5"),
    ("data.labeled_fraction=-0.1", "-0.1"),
    ("data.num_labeled=0", "0"),
    ("data.split_seed=-1", "-1"),
    ("data.weak_pipeline=w-u", "'w-u'"),
    ("data.weak_pipeline=no", "'no'"),
    ("eval.crop_size=0", "0"),
    ("eval.resize_multiple=0", "0"),
    ("eval.mode=whole", "'whole'"),
    ("model.output_stride=4", "4"),
    ("model.heads.representation=-1", "-1"),
    ("model.aspp_channels=0", "0"),
    ("model.decoder_channels=0", "0"),
    ("model.low_level_channels=0", "0"),
    ("device=gpu", "'gpu'"),
    ("device=cuda:x", "'cuda:x'"),
    ("device=mps", "'mps'"),
])
def test_bad_value_is_one_line_naming_key_value_and_range(override, shown):
    key = override.partition("=")[0]
    with pytest.raises(SemisegError) as info:
        load_config(None, REQUIRED + [override])
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    assert message.startswith(f"invalid value for '{key}': {shown} (allowed: "), message


def test_message_reads_as_documented():
    with pytest.raises(SemisegError) as info:
        load_config(None, REQUIRED + ["train.momentum=-0.5"])
    assert str(info.value) == "invalid value for 'train.momentum': -0.5 (allowed: >= 0)"
    with pytest.raises(SemisegError) as info:
        load_config(None, REQUIRED + ["train.amp=fp32"])
    assert str(info.value) == "invalid value for 'train.amp': 'fp32' (allowed: off, bf16, fp16, auto)"
    with pytest.raises(SemisegError, match=r"'train.lr': inf \(allowed: a finite number, > 0\)"):
        load_config(None, REQUIRED + ["train.lr=.inf"])


def test_bad_value_in_a_file_is_caught(tmp_path):
    cfg_file = tmp_path / "exp.yaml"
    cfg_file.write_text("train:\n  total_iters: 5\n  weight_decay: -1.0\n")
    with pytest.raises(SemisegError, match=r"invalid value for 'train.weight_decay': -1.0 \(allowed: >= 0\)"):
        load_config(cfg_file)


def test_good_edge_values_load():
    cfg = load_config(None, REQUIRED + [
        "train.momentum=0", "train.weight_decay=0", "train.eval_every=0", "train.checkpoint_every=0",
        "train.log_every=0", "train.poly_power=0", "data.crop_size=null", "eval.crop_size=null", "eval.mode=null",
        "data.weak_pipeline=null", "data.num_workers=0", "data.scale_range=[1.0,1.0]",
        "data.strong_blur_sigma=[0.5,0.5]", "data.labeled_fraction=1.0", "data.num_labeled=null",
        "model.heads.representation=0", "model.output_stride=8", "device=cuda:1", "train.amp=bf16",
        "train.optimizer=adamw", "eval.mode=sliding_window", "data.weak_pipeline=cps", "train.micro_batch_size=1",
    ])
    assert cfg.train.momentum == 0 and cfg.train.weight_decay == 0 and cfg.train.eval_every == 0
    assert cfg.data.crop_size is None and cfg.device == "cuda:1"
    for device in ("auto", "cpu", "cuda", "cuda:0"):
        assert load_config(None, REQUIRED + [f"device={device}"]).device == device


def test_tilde_in_path_options_expands_to_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = load_config(None, REQUIRED + ["output_dir=~/x", "data.root=~/data", "data.splits_dir=~/splits",
                                        "data.labeled_list=~/l.txt", "data.unlabeled_list=~/u.txt",
                                        "data.val_list=~/v.txt", "model.pretrained=~/w.pt"])
    assert cfg.output_dir == os.path.join(str(tmp_path), "x")
    assert cfg.data.root == os.path.join(str(tmp_path), "data")
    assert cfg.data.splits_dir == os.path.join(str(tmp_path), "splits")
    assert (cfg.data.labeled_list, cfg.data.unlabeled_list, cfg.data.val_list) == tuple(
        os.path.join(str(tmp_path), name) for name in ("l.txt", "u.txt", "v.txt"))
    assert cfg.model.pretrained == os.path.join(str(tmp_path), "w.pt")
    # names that are not paths stay as they are
    assert load_config(None, REQUIRED + ["model.pretrained=imagenet"]).model.pretrained == "imagenet"
    assert load_config(None, REQUIRED + ["output_dir=runs/a~b"]).output_dir == "runs/a~b"


def test_inference_config_is_checked_too():
    from semiseg.config import to_yaml
    from semiseg.engine.inference import _config_of

    import yaml

    ckpt = {"config": yaml.safe_load(to_yaml(load_config(None, REQUIRED)))}
    assert _config_of(ckpt, ["eval.crop_size=32"]).eval.crop_size == 32
    with pytest.raises(SemisegError, match=r"^invalid value for 'eval.resize_multiple': 0 \(allowed: >= 1\)$"):
        _config_of(ckpt, ["eval.resize_multiple=0"])


@pytest.mark.parametrize("override, key", [("train.momentum=-0.5", "train.momentum"),
                                           ("data.scale_range=[0.5]", "data.scale_range")])
def test_cli_train_stops_before_writing(tmp_path, capsys, override, key):
    out = tmp_path / "run"
    code = main(["train", "configs/synthetic/supervised.yaml", f"output_dir={out}", "train.total_iters=2",
                 "--no-progress", override])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"error: invalid value for '{key}'"), err
    assert not out.exists()
