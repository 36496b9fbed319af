"""train.amp: networks run under autocast, everything computed from their outputs in fp32; CPU bf16 covered."""

import copy
import json

import pytest
import torch
from torch import nn

from engine_runs import TINY_RUN, single_thread
from semiseg.cli import main
from semiseg.components.losses import supervised_ce
from semiseg.components.selection import pseudo_labels
from semiseg.engine.precision import Precision
from semiseg.errors import SemisegError
from semiseg.methods.supervised import Supervised
from semiseg.models import build_model


class _ModelCfg:
    encoder, output_stride, pretrained = "mobilenetv3_small_050", 16, None
    aspp_channels = decoder_channels = low_level_channels = 8


class _Holder(nn.Module):
    """Stands in for a method: it owns the network."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.model = build_model(_ModelCfg(), 5)


def _record_conv_dtypes(module, seen):
    first_conv = next(m for m in module.modules() if isinstance(m, nn.Conv2d))
    first_conv.register_forward_hook(lambda m, a, out: seen.append(out.dtype))


def test_cpu_bf16_networks_in_bf16_losses_and_statistics_in_fp32():
    with single_thread():
        _check_bf16_split()


def _check_bf16_split():
    holder = _Holder()
    reference = copy.deepcopy(holder.model)
    precision = Precision("bf16", torch.device("cpu"))
    precision.attach(holder)
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 5, (2, 32, 32))
    inner = []
    _record_conv_dtypes(holder.model, inner)
    logits = holder.model(x)
    assert inner == [torch.bfloat16]  # the convolutions ran in bf16 ...
    assert logits.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")  # ... the method gets fp32
    loss = supervised_ce(logits, y)
    _, confidence = pseudo_labels(logits)
    similarity = logits.flatten(1) @ logits.flatten(1).T  # e.g. a contrastive loss: fp32, not autocast
    assert loss.dtype == confidence.dtype == similarity.dtype == torch.float32
    precision.backward(loss)
    assert all(p.grad.dtype == torch.float32 for p in holder.parameters() if p.grad is not None)
    with torch.no_grad():
        exact = supervised_ce(reference(x), y)
    assert float(loss.detach()) == pytest.approx(float(exact), rel=0.05)  # bf16 keeps ~3 significant digits
    teacher = copy.deepcopy(holder.model)  # a teacher copied later keeps the autocast hooks
    teacher_inner = []
    _record_conv_dtypes(teacher, teacher_inner)
    assert teacher(x).dtype == torch.float32 and teacher_inner == [torch.bfloat16]
    off = Precision("off", torch.device("cpu"))
    off.attach(reference)
    assert reference(x).dtype == torch.float32 and off.scaler is None and off.state_dict() is None


def test_train_with_bf16_on_cpu(tmp_path, capsys, monkeypatch):
    from conftest import REPO

    monkeypatch.chdir(REPO)
    real_step, seen = Supervised.training_step, []

    def recording_step(self, batch, ctx):
        _record_conv_dtypes(self.model, seen)
        return real_step(self, batch, ctx)

    monkeypatch.setattr(Supervised, "training_step", recording_step)
    out = tmp_path / "run"
    with single_thread():
        code = main(["train", *TINY_RUN, "train.total_batch_size=4", "train.total_iters=2", "train.amp=bf16",
                     f"output_dir={out}"])
    _, err = capsys.readouterr()
    assert code == 0, err
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
              if '"train"' in line]
    assert len(losses) == 2 and all(0 < v < 10 for v in losses)
    assert seen and set(seen) == {torch.bfloat16}  # the training forwards ran under bf16 autocast
    weights = torch.load(out / "latest.pt", weights_only=True)["method"]
    assert all(v.dtype in (torch.float32, torch.int64) for v in weights.values())  # master weights stay fp32


def test_amp_values_are_checked():
    with pytest.raises(SemisegError, match="train.amp=fp16 needs a CUDA GPU"):
        Precision("fp16", torch.device("cpu"))
    with pytest.raises(SemisegError, match="invalid value for 'train.amp': 'fp8'"):
        Precision("fp8", torch.device("cpu"))


def test_auto_resolves_from_the_hardware(tmp_path):
    from semiseg.engine.precision import cpu_flags, resolve_amp

    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu, flags={"avx512f", "avx512_bf16"})[0] == "bf16"
    assert resolve_amp("auto", cpu, flags={"amx_bf16"})[0] == "bf16"
    mode, reason = resolve_amp("auto", cpu, flags={"avx2", "avx512f"})  # AVX-512 alone: bf16 would be emulated
    assert mode == "off" and "no native bf16" in reason
    assert resolve_amp("bf16", cpu, flags=set()) == ("bf16", "train.amp=bf16")  # explicit modes stay as given
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512_bf16 avx2\n\nprocessor\t: 1\n")
    assert cpu_flags(str(info)) == {"fpu", "sse", "avx512_bf16", "avx2"}
    assert cpu_flags(str(tmp_path / "missing")) == set()
    precision = Precision("auto", cpu)
    assert precision.mode == ("bf16" if {"avx512_bf16", "amx_bf16"} & cpu_flags() else "off")
    assert precision.dtype == (torch.bfloat16 if precision.mode == "bf16" else None)


def test_auto_is_printed_and_recorded(tmp_path, capsys, monkeypatch):
    from conftest import REPO

    monkeypatch.chdir(REPO)
    monkeypatch.setattr("semiseg.engine.precision.cpu_flags", lambda *a: {"avx512_bf16"})
    out = tmp_path / "run"
    with single_thread():
        code = main(["train", *TINY_RUN, "train.total_batch_size=4", "train.total_iters=1", "train.amp=auto",
                     f"output_dir={out}"])
    printed, err = capsys.readouterr()
    assert code == 0, err
    assert "precision: bf16 (train.amp=auto: the CPU has avx512_bf16)" in printed
    info = json.loads((out / "run_info.json").read_text())
    assert info["amp"] == "bf16" and "avx512_bf16" in info["amp_reason"]
    assert "amp: auto" in (out / "config.yaml").read_text()  # the config keeps the choice, the record the result


def test_auto_is_the_default_and_the_synthetic_tables_stay_fp32():
    from conftest import REPO
    from semiseg.config import Config, load_config

    assert Config().train.amp == "auto"
    # configs that do not name train.amp follow the default; the synthetic base pins the fp32 of its records
    assert load_config(REPO / "configs" / "pascal" / "cpcl_r50_512_1_8.yaml").train.amp == "auto"
    assert load_config(REPO / "configs" / "synthetic" / "fixmatch.yaml").train.amp == "off"
    assert load_config(REPO / "configs" / "camvid" / "fixmatch_lite0_192_1_8.yaml").train.amp == "bf16"
