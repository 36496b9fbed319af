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


def test_yaml_off_on_no_stay_strings(tmp_path):
    # YAML 1.1 reads off/on/no/yes as booleans; the config reader keeps them strings (YAML 1.2 core)
    cfg = load_config(None, ["train.total_iters=5", "train.amp=off"])
    assert cfg.train.amp == "off"
    cfg_file = write(tmp_path / "exp.yaml", "train:\n  total_iters: 5\n  amp: off\n")
    assert load_config(cfg_file).train.amp == "off"
    cfg = load_config(None, ["train.total_iters=5", "model.encoder=yes", "data.dataset=n"])
    assert (cfg.model.encoder, cfg.data.dataset) == ("yes", "n")
    # still the string 'on' (quoted in the range check's message), not a boolean refused by the type check
    with pytest.raises(SemisegError, match=r"invalid value for 'eval.mode': 'on' \(allowed: "):
        load_config(None, ["train.total_iters=5", "eval.mode=on"])


@pytest.mark.parametrize("text, value", [("true", True), ("false", False), ("True", True), ("FALSE", False)])
def test_yaml_true_false_are_booleans(tmp_path, text, value):
    cfg = load_config(None, ["train.total_iters=5", f"deterministic={text}", f"train.channels_last={text}"])
    assert cfg.deterministic is value and cfg.train.channels_last is value
    cfg_file = write(tmp_path / "exp.yaml",
                     f"deterministic: {text}\ntrain:\n  total_iters: 5\n  wd_norm_bias: {text}\n")
    cfg = load_config(cfg_file)
    assert cfg.deterministic is value and cfg.train.wd_norm_bias is value


def test_yaml_bool_field_still_reads_yes_off():
    # the string reaches the boolean field, which converts it itself (OmegaConf's BooleanNode)
    cfg = load_config(None, ["train.total_iters=5", "train.channels_last=yes", "deterministic=off"])
    assert cfg.train.channels_last is True and cfg.deterministic is False
    with pytest.raises(SemisegError, match=r"invalid value for 'train.channels_last'"):
        load_config(None, ["train.total_iters=5", "train.channels_last=maybe"])


def test_override_numbers_keep_their_types(tmp_path):
    cfg = load_config(None, ["train.total_iters=5", "seed=3", "train.lr=1e-3", "train.weight_decay=5.0e-6",
                             "train.momentum=.5", "data.labeled_fraction=1E-1"])
    assert cfg.seed == 3 and isinstance(cfg.seed, int)
    assert cfg.train.lr == 1e-3 and cfg.train.weight_decay == 5e-6 and cfg.train.momentum == 0.5
    assert cfg.data.labeled_fraction == 0.1
    from semiseg.yaml_loader import load

    assert type(load("1e-3")) is float and type(load("-2E+4")) is float and type(load("3")) is int
    cfg_file = write(tmp_path / "exp.yaml", "train:\n  total_iters: 5\n  lr: 1e-3\n  weight_decay: 5.0e-6\n")
    cfg = load_config(cfg_file)
    assert cfg.train.lr == 1e-3 and cfg.train.weight_decay == 5e-6


def test_overrides_nest_merge_and_reject_bad_yaml():
    cfg = load_config(None, ["train.total_iters=5", "method.name=fixmatch", "method.threshold=0.7",
                             "model.pretrained=null", "output_dir=2024-01-01", "train.total_iters=7"])
    assert cfg.method.threshold == 0.7 and cfg.model.pretrained is None and cfg.train.total_iters == 7
    assert cfg.output_dir == "2024-01-01"
    with pytest.raises(SemisegError, match=r"command line: cannot parse overrides: 'data.scale_range=\[1, 2'"):
        load_config(None, ["train.total_iters=5", "data.scale_range=[1, 2"])


@pytest.mark.parametrize("text, key, line", [
    ("method:\n  name: fixmatch\ntrain:\n  total_iters: 5\nmethod:\n  name: supervised\n", "method", 5),
    ("train:\n  total_iters: 5\n  lr: 0.1\n  amp: bf16\n  lr: 0.2\n", "train.lr", 5),
])
def test_duplicate_keys_are_refused(tmp_path, text, key, line):
    cfg_file = write(tmp_path / "dup.yaml", text)
    with pytest.raises(SemisegError) as info:
        load_config(cfg_file)
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(f"{cfg_file} line {line}: key '{key}' appears twice"), message
    assert "keep one" in message
