"""`semiseg export`: the computation a checkpoint predicts with, as an ONNX or TorchScript file (docs/deployment.md).

What is exported is `method.predictor(network)` as a module: `method.predict` (a teacher, or e.g. the mean of
two networks' logits) or the network `--network` names. Input: an ImageNet-normalised float32 batch
N x 3 x H x W (N, H, W dynamic); output: the logits N x C x H x W. The file carries the class names, the
palette and the normalisation (`metadata`), so it is usable without semiseg.

The file is built in memory, loaded back and compared with PyTorch at three input sizes (`check_shapes`) in
fp32; only when the largest difference is at most `TOLERANCE` is it written (a temporary file, then a rename),
so a failed export leaves no file and an existing one as it was.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from ..data.normalize import MEAN, STD
from ..errors import SemisegError
from .build import crop_size
from .checkpoint import load_checkpoint, reporting_write_errors

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}  # format -> default suffix (after the stem)
TOLERANCE = 1e-4  # largest allowed |exported - PyTorch| over the check's logits, fp32
ONNX_OPSET = 17  # the TorchScript-based exporter's opset; its fallback, the torch.export-based one, writes 18
ONNX_FALLBACK_OPSET = 18
METADATA_FILE = "semiseg.json"  # the TorchScript archive's extra file holding `metadata`
ONNX_EXTRA = "pip install 'semiseg[export]'"


class Predictor(nn.Module):
    """`method.predictor(network)` as a module: normalised images (N, 3, H, W) -> logits (N, C, H, W)."""

    def __init__(self, method: nn.Module, network: Optional[str] = None):
        super().__init__()
        method.predictor(network)  # an unknown network stops here, with its one line
        self.method = method
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.method.predictor(self.network)(images)


@dataclass
class ExportResult:
    path: Path
    format: str
    differences: list  # [((N, 3, H, W), max |exported - PyTorch|)] per checked size
    exporter: str  # how the file was made (for ONNX: which exporter and opset)

    @property
    def max_difference(self) -> float:
        return max(diff for _, diff in self.differences)


def default_output(checkpoint, fmt: str) -> Path:
    """`<checkpoint stem>.onnx` / `<checkpoint stem>.torchscript.pt`, next to the checkpoint."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + FORMATS[fmt])


def plan_output(checkpoint, fmt: str, out=None, overwrite: bool = False) -> Path:
    """The file to write, checked before anything is loaded or written: its folder exists, it is not the
    checkpoint, and it is new unless `overwrite`. A folder as `out` gets the default file name inside it."""
    if fmt not in FORMATS:
        raise SemisegError(f"unknown export format '{fmt}'; choose one of {', '.join(FORMATS)}")
    path = default_output(checkpoint, fmt) if out is None else Path(out)
    if out is not None and path.is_dir():
        path = path / default_output(checkpoint, fmt).name
    if not path.parent.is_dir():
        raise SemisegError(f"--out {path}: the folder {path.parent} does not exist; create it or give another --out")
    if path.exists() and path.resolve() == Path(checkpoint).resolve():
        raise SemisegError(f"--out {path} is the checkpoint itself; give another file name")
    if path.exists() and not overwrite:
        raise SemisegError(f"{path} already exists; pass --overwrite to replace it, or give another --out")
    return path


def need_onnx() -> None:
    """One line naming the extra when onnx or onnxruntime is missing."""
    for module in ("onnx", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            raise SemisegError(f"--format onnx needs the packages onnx and onnxruntime ({module} is missing): "
                               f"{ONNX_EXTRA}") from None


def side_multiple(cfg) -> int:
    """The input sides the network accepts are multiples of this (DPT's ViT/14: 14; DeepLabV3+: any)."""
    if cfg.model.name == "dpt":
        from ..models.dpt import PATCH

        return PATCH
    return 1


def check_shapes(crop: int, multiple: int = 1) -> list[tuple[int, int, int, int]]:
    """The input shapes of the parity check: the crop (S x S), a smaller non-square size whose sides are
    multiples of 8 (batch 2: N is dynamic too) and one whose sides are not; all multiples of `multiple`."""
    def near(x: float, step: int) -> int:
        return max(step, step * round(x / step))

    def not_of_8(x: float) -> int:
        base = near(x, multiple)
        return next((v for v in range(base, base + 8 * multiple, multiple) if v % 8), base)

    step8 = math.lcm(8, multiple)
    return [(1, 3, near(crop, multiple), near(crop, multiple)),
            (2, 3, near(crop / 2, step8), near(crop * 3 / 4, step8)),
            (1, 3, not_of_8(crop * 0.6), not_of_8(crop * 0.9))]


def metadata(cfg, preset, network: Optional[str], checkpoint) -> dict:
    """What a user of the file needs besides the graph (docs/deployment.md: metadata)."""
    from .. import __version__

    return {
        "class_names": list(preset.class_names),
        "palette": [list(color) for color in preset.palette],
        "mean": list(MEAN),
        "std": list(STD),
        "num_classes": int(preset.num_classes),
        "input": "image: float32 N x 3 x H x W, RGB scaled to [0, 1], then (x - mean) / std per channel",
        "output": "logits: float32 N x C x H x W at the input size; argmax over C = class index",
        "side_multiple": side_multiple(cfg),
        "eval_mode": cfg.eval.mode or preset.eval_mode,
        "crop_size": int(cfg.eval.crop_size or crop_size(cfg, preset)),
        "method": cfg.method.name,
        "network": network or "predict",
        "model": cfg.model.name,
        "encoder": cfg.model.encoder,
        "checkpoint": Path(checkpoint).name,
        "semiseg_version": __version__,
    }


@contextlib.contextmanager
def _quiet():
    """Exporter and tracer warnings (deprecations, traced shape arithmetic) and their progress output off, also
    what they print to the stdout file descriptor (a failing ONNX export dumps its whole graph there); the
    parity check is the guard, and stderr is left alone."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _torchscript(module: Predictor, example: torch.Tensor, meta: dict) -> tuple[bytes, str]:
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(module, example, check_trace=False)
        # freezing inlines the weights `predict` reads and drops the rest (optimisers' state, queues, other nets)
        frozen = torch.jit.freeze(traced.eval(), optimize_numerics=False)
        buffer = io.BytesIO()
        torch.jit.save(frozen, buffer, _extra_files={METADATA_FILE: json.dumps(meta)})
    return buffer.getvalue(), "torch.jit.trace"


def _onnx(module: Predictor, example: torch.Tensor, meta: dict) -> tuple[bytes, str]:
    import onnx

    names = {"input_names": ["image"], "output_names": ["logits"]}
    try:  # the TorchScript-based exporter: fast, needs only onnx
        buffer = io.BytesIO()
        with _quiet(), torch.no_grad():
            torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=ONNX_OPSET,
                              dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                                            "logits": {0: "batch", 2: "height", 3: "width"}}, **names)
        model, exporter = onnx.load_from_string(buffer.getvalue()), f"TorchScript-based exporter, opset {ONNX_OPSET}"
    except Exception as first:  # e.g. an operator it lacks (DPT's antialiased resampling): torch.export's
        try:
            import onnxscript  # noqa: F401
        except ImportError:
            raise SemisegError(f"the ONNX exporter cannot export this network ({type(first).__name__}: "
                               f"{str(first).splitlines()[0][:160]}); the torch.export-based one needs onnxscript: "
                               f"{ONNX_EXTRA}") from None
        from torch.export import Dim

        shapes = ({0: Dim("batch", min=1), 2: Dim("height", min=2), 3: Dim("width", min=2)},)
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(module, (example.repeat(2, 1, 1, 1),), dynamo=True, dynamic_shapes=shapes,
                                        opset_version=ONNX_FALLBACK_OPSET, **names)
        model, exporter = program.model_proto, f"torch.export-based exporter, opset {ONNX_FALLBACK_OPSET}"
    for key, value in meta.items():  # every value JSON text (docs/deployment.md: metadata)
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    return model.SerializeToString(), exporter


def _runner(fmt: str, data: bytes):
    """The exported file, loaded back as a function of a float32 numpy batch."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"image": x})[0]
    with _quiet():
        loaded = torch.jit.load(io.BytesIO(data), map_location="cpu")
    return lambda x: loaded(torch.from_numpy(x)).numpy()


def parity(fmt: str, data: bytes, module: Predictor, shapes) -> list:
    """[(shape, max |exported - PyTorch|)] on seeded random normalised batches."""
    run = _runner(fmt, data)
    generator = torch.Generator().manual_seed(0)
    differences = []
    for shape in shapes:
        x = torch.randn(*shape, generator=generator)
        with torch.no_grad():
            expected = module(x).float().numpy()
        got = run(x.numpy())
        if got.shape != expected.shape:
            raise SemisegError(f"the exported {fmt} model gives logits of shape {tuple(got.shape)} for an input of "
                               f"shape {tuple(shape)}, PyTorch {tuple(expected.shape)}; nothing was written")
        differences.append((tuple(shape), float(np.abs(got.astype(np.float32) - expected).max())))
    return differences


def export_checkpoint(checkpoint, fmt: str, out=None, network: Optional[str] = None,
                      overwrite: bool = False) -> ExportResult:
    """Export what `checkpoint` predicts with (`semiseg export`); returns where, and the parity check."""
    if fmt not in FORMATS:
        raise SemisegError(f"unknown export format '{fmt}'; choose one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        need_onnx()
    ckpt = load_checkpoint(checkpoint)  # missing or not a checkpoint: its one line, before the output checks
    path = plan_output(checkpoint, fmt, out, overwrite)
    from .inference import load_for_inference

    cfg, preset, method, _ = load_for_inference(checkpoint, device=torch.device("cpu"), ckpt=ckpt)
    module = Predictor(method.float(), network).eval()
    meta = metadata(cfg, preset, network, checkpoint)
    shapes = check_shapes(meta["crop_size"], meta["side_multiple"])
    example = torch.randn(*shapes[0], generator=torch.Generator().manual_seed(1))
    data, exporter = (_onnx if fmt == "onnx" else _torchscript)(module, example, meta)
    differences = parity(fmt, data, module, shapes)
    at, worst = max(differences, key=lambda item: math.inf if math.isnan(item[1]) else item[1])
    if not worst <= TOLERANCE:  # also catches nan
        raise SemisegError(f"the exported {fmt} model differs from PyTorch by {worst:.2e} (> {TOLERANCE:g}) at input "
                           f"{'x'.join(map(str, at))}; nothing was written")
    _write(path, data)
    return ExportResult(path, fmt, differences, exporter)


def _write(path: Path, data: bytes) -> None:
    """`<path>.tmp`, then a rename: an interrupted or failed write leaves no partial file and `path` as it was;
    an OSError is one line naming the file and `--out`."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with reporting_write_errors(path, setting="--out"):
            tmp.write_bytes(data)
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def read_metadata(path) -> dict:
    """The metadata of an exported file, as `export_checkpoint` wrote it."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        return {entry.key: json.loads(entry.value) for entry in model.metadata_props}
    extra = {METADATA_FILE: ""}
    with _quiet():
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra[METADATA_FILE])

