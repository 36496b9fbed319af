"""train.amp: autocast on the networks' forwards, fp32 losses and softmax statistics; CPU bf16 covered."""

import json

import pytest
import torch

from engine_runs import TINY_RUN, single_thread
from semiseg.cli import main
from semiseg.components.losses import masked_ce, supervised_ce
from semiseg.components.selection import pseudo_labels
from semiseg.engine.precision import Precision
from semiseg.errors import SemisegError
from semiseg.methods.supervised import Supervised
from semiseg.models import build_model


class _ModelCfg:
    encoder, output_stride, pretrained = "mobilenetv3_small_050", 16, None
    aspp_channels = decoder_channels = low_level_channels = 8


def test_cpu_bf16_autocast_runs_the_network_in_bf16_and_losses_in_fp32():
    torch.manual_seed(0)
    model = build_model(_ModelCfg(), 5)
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 5, (2, 32, 32))
    precision = Precision("bf16", torch.device("cpu"))
    with precision.autocast():
        logits = model(x)
        loss = supervised_ce(logits, y)
        _, confidence = pseudo_labels(logits)
        unsup = masked_ce(logits, y, torch.ones(2, 32, 32), torch.ones(2, 32, 32))
    assert logits.dtype == torch.bfloat16
    assert loss.dtype == confidence.dtype == unsup.dtype == torch.float32
    precision.backward(loss)
    assert all(p.grad.dtype == torch.float32 for p in model.parameters() if p.grad is not None)
    assert precision.scaler is None and precision.state_dict() is None
    with torch.no_grad():
        reference = supervised_ce(model(x), y)
    assert float(loss.detach()) == pytest.approx(float(reference), rel=0.05)  # bf16 keeps ~3 significant digits


def test_train_with_bf16_on_cpu(tmp_path, capsys, monkeypatch):
    from conftest import REPO

    monkeypatch.chdir(REPO)
    real_step, autocast_dtypes = Supervised.training_step, []

    def recording_step(self, batch, progress):
        if torch.is_autocast_enabled("cpu"):
            autocast_dtypes.append(torch.get_autocast_dtype("cpu"))
        return real_step(self, batch, progress)

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
    assert autocast_dtypes == [torch.bfloat16, torch.bfloat16]  # each training step ran under bf16 autocast
    weights = torch.load(out / "latest.pt", weights_only=True)["method"]
    assert all(v.dtype in (torch.float32, torch.int64) for v in weights.values())  # master weights stay fp32


def test_amp_values_are_checked():
    with pytest.raises(SemisegError, match="train.amp=fp16 needs a CUDA GPU"):
        Precision("fp16", torch.device("cpu"))
    with pytest.raises(SemisegError, match="invalid value for 'train.amp': 'fp8'"):
        Precision("fp8", torch.device("cpu"))
