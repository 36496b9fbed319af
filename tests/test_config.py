"""Config loading: _base_ merge, overrides, and one clear line for every bad input."""

import pytest

from semiseg.config import load_config, resolve_method_params
from semiseg.errors import SemisegError
from semiseg.methods.fixmatch import FixMatchParams


def write(path, text):
    path.write_text(text)
    return path


def test_base_then_file_then_overrides(tmp_path):
    write(tmp_path / "base.yaml", "train:\n  total_iters: 10\n  lr: 0.5\nmodel:\n  encoder: resnet18\n")
    cfg_file = write(tmp_path / "exp.yaml", "_base_: base.yaml\ntrain:\n  lr: 0.25\nmethod:\n  name: fixmatch\n")
    cfg = load_config(cfg_file, ["train.total_iters=30", "data.num_labeled=5"])
    assert cfg.train.lr == 0.25  # file over base
    assert cfg.train.total_iters == 30  # overrides over file
    assert cfg.model.encoder == "resnet18"  # from base
    assert cfg.data.num_labeled == 5
    assert cfg.train.momentum == 0.9  # schema default


def test_unknown_key_names_key_and_closest(tmp_path):
    cfg_file = write(tmp_path / "exp.yaml", "train:\n  total_iters: 10\n  totl_batch_size: 4\n")
    with pytest.raises(SemisegError, match=r"unknown config key 'train.totl_batch_size'.*'total_batch_size'"):
        load_config(cfg_file)


def test_unknown_key_on_command_line():
    with pytest.raises(SemisegError, match=r"command line: unknown config key 'data.crop'.*crop_size"):
        load_config(None, ["train.total_iters=5", "data.crop=3"])


def test_wrong_type_names_key(tmp_path):
    cfg_file = write(tmp_path / "exp.yaml", "train:\n  total_iters: ten\n")
    with pytest.raises(SemisegError, match=r"exp.yaml: invalid value for 'train.total_iters'"):
        load_config(cfg_file)


def test_missing_required_value():
    with pytest.raises(SemisegError, match=r"missing required value 'train.total_iters'"):
        load_config(None, [])


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(SemisegError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = write(tmp_path / "bad.yaml", "train: [1, 2\n")
    with pytest.raises(SemisegError, match=r"bad.yaml.*not valid YAML"):
        load_config(bad)


def test_base_only_one_level(tmp_path):
    write(tmp_path / "a.yaml", "train:\n  lr: 1.0\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    cfg_file = write(tmp_path / "c.yaml", "_base_: b.yaml\n")
    with pytest.raises(SemisegError, match="one level deep"):
        load_config(cfg_file)


def test_override_syntax():
    with pytest.raises(SemisegError, match="not of the form key=value"):
        load_config(None, ["train.total_iters"])


def test_method_params_validated_against_the_method():
    cfg = load_config(None, ["train.total_iters=5", "method.name=fixmatch", "method.threshold=0.7"])
    params = resolve_method_params(cfg, FixMatchParams)
    assert params.threshold == 0.7
    cfg = load_config(None, ["train.total_iters=5", "method.name=fixmatch", "method.treshold=0.7"])
    with pytest.raises(SemisegError, match=r"unknown config key 'method.treshold'.*'threshold'"):
        resolve_method_params(cfg, FixMatchParams)
    cfg = load_config(None, ["train.total_iters=5", "method.name=fixmatch", "method.threshold=high"])
    with pytest.raises(SemisegError, match=r"invalid value for 'method.threshold'"):
        resolve_method_params(cfg, FixMatchParams)


def test_repository_configs_load():
    from conftest import REPO

    for path in sorted((REPO / "configs").rglob("*.yaml")):
        if "_base_" in path.parts:
            continue
        cfg = load_config(path)
        assert cfg.train.total_iters > 0, path
