"""`semiseg export` (docs/deployment.md): ONNX and TorchScript files that compute what evaluation computes, with
their metadata, checked against PyTorch; each bad input stops with its one line and writes nothing."""

import hashlib
import json
import re
import shutil
import sys

import numpy as np
import pytest
import torch

from conftest import REPO
from engine_runs import single_thread
from semiseg.cli import main
from semiseg.engine.export import METADATA_FILE, TOLERANCE, Predictor, check_shapes, parity, read_metadata

# A 0.3 M-parameter network on 32 px scenes: one training iteration takes a few seconds.
TINY = ["model.encoder=mobilenetv3_small_050", "model.pretrained=null", "model.aspp_channels=8",
        "model.decoder_channels=8", "model.low_level_channels=8", "data.num_workers=0", "data.synthetic.num_train=4",
        "data.synthetic.num_val=1", "data.synthetic.image_size=32", "data.crop_size=32", "data.scale_range=[1.0,1.0]",
        "data.num_labeled=2", "train.total_batch_size=2", "train.unlabeled_batch_size=2", "train.eval_every=100",
        "train.total_iters=1", "--no-progress"]
SIZES = [(1, 3, 32, 32), (2, 3, 24, 40), (1, 3, 21, 35)]  # the crop, non-square multiples of 8, and not


def train_tiny(out, method="supervised"):
    """A 1-iteration run of the tiny network; its latest.pt."""
    with single_thread():
        assert main(["train", str(REPO / f"configs/synthetic/{method}.yaml"), f"output_dir={out}", *TINY]) == 0
    return out / "latest.pt"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("run"))


@pytest.fixture
def ckpt(trained, tmp_path):
    """A copy of the tiny checkpoint in a folder of the test's own (the default output goes next to it)."""
    return shutil.copy(trained, tmp_path / "best.pt")


@pytest.fixture(scope="module")
def reference(trained):
    """The PyTorch computation evaluation runs: the method's predict, on the CPU."""
    from semiseg.engine.inference import load_for_inference

    _, preset, method, _ = load_for_inference(trained, device=torch.device("cpu"))
    return Predictor(method).eval(), preset


def export(capsys, *argv):
    with single_thread():
        code = main(["export", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def max_difference(run, module):
    """max |exported - PyTorch| over SIZES, on random normalised batches."""
    worst = 0.0
    for shape in SIZES:
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
        with torch.no_grad():
            expected = module(x).numpy()
        got = run(x.numpy())
        assert got.shape == expected.shape == (shape[0], 7, *shape[2:])
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def check_metadata(meta, preset):
    assert meta["class_names"] == list(preset.class_names) and meta["num_classes"] == 7
    assert meta["palette"] == [list(color) for color in preset.palette]
    assert meta["mean"] == [0.485, 0.456, 0.406] and meta["std"] == [0.229, 0.224, 0.225]
    assert meta["method"] == "supervised" and meta["network"] == "predict" and meta["crop_size"] == 32


def test_onnx_matches_pytorch_and_carries_the_metadata(ckpt, reference, capsys):
    onnxruntime = pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    module, preset = reference
    code, out, err = export(capsys, ckpt, "--format", "onnx")
    assert code == 0, err
    path = ckpt.with_name("best.onnx")
    assert f"wrote {path}" in out and "max |difference|" in out
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = max_difference(lambda x: session.run(None, {"image": x})[0], module)
    print(f"ONNX max |difference| {worst:.2e}")
    assert worst <= TOLERANCE
    meta = {key: json.loads(value) for key, value in session.get_modelmeta().custom_metadata_map.items()}
    check_metadata(meta, preset)
    assert read_metadata(path) == meta


def test_torchscript_matches_pytorch_and_carries_the_metadata(ckpt, reference, capsys):
    module, preset = reference
    code, out, err = export(capsys, ckpt, "--format", "torchscript")
    assert code == 0, err
    path = ckpt.with_name("best.torchscript.pt")
    extra = {METADATA_FILE: ""}
    loaded = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    with torch.no_grad():
        worst = max_difference(lambda x: loaded(torch.from_numpy(x)).numpy(), module)
    print(f"TorchScript max |difference| {worst:.2e}")
    assert worst <= TOLERANCE
    meta = json.loads(extra[METADATA_FILE])
    check_metadata(meta, preset)
    assert path.stat().st_size < ckpt.stat().st_size  # the weights predict reads, not the optimiser's state
    # what a user without semiseg does (docs/deployment.md): normalise with the metadata, run, argmax
    rgb = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (30, 44, 3), dtype=np.uint8))
    x = (rgb.permute(2, 0, 1).float() / 255 - torch.tensor(meta["mean"]).view(3, 1, 1)) / torch.tensor(
        meta["std"]).view(3, 1, 1)
    with torch.no_grad():
        labels = loaded(x[None])[0].argmax(0)
    assert labels.shape == (30, 44) and int(labels.max()) < len(meta["class_names"])


def test_exports_what_predict_computes_not_only_the_model(ckpt, monkeypatch, capsys):
    """A method that predicts with a combination of forwards (as RRN averages two networks) exports the
    combination; --network exports one network's forward."""
    from semiseg.catalog import METHODS
    from semiseg.engine.inference import load_for_inference

    def flip_average(self, images):
        return (self.model(images) + self.model(images.flip(-1)).flip(-1)) / 2

    monkeypatch.setattr(METHODS.get("supervised"), "predict", flip_average)
    assert export(capsys, ckpt, "--format", "torchscript")[0] == 0
    assert export(capsys, ckpt, "--format", "torchscript", "--network", "model", "--out", ckpt.parent / "m.pt")[0] == 0
    _, _, method, _ = load_for_inference(ckpt, device=torch.device("cpu"))
    x = torch.randn(2, 3, 24, 40, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        both, model = method.predict(x), method.model(x)
        exported = torch.jit.load(str(ckpt.with_name("best.torchscript.pt")))(x)
        exported_model = torch.jit.load(str(ckpt.parent / "m.pt"))(x)
    assert (both - model).abs().max() > 1e-3
    assert (exported - both).abs().max() <= TOLERANCE and (exported_model - model).abs().max() <= TOLERANCE
    assert read_metadata(ckpt.parent / "m.pt")["network"] == "model"


def test_a_folder_as_out_and_overwrite(ckpt, capsys):
    folder = ckpt.parent / "exported"
    folder.mkdir()
    (folder / "best.torchscript.pt").write_bytes(b"old")
    code, _, err = export(capsys, ckpt, "--format", "torchscript", "--out", folder, "--overwrite")
    assert code == 0, err
    assert read_metadata(folder / "best.torchscript.pt")["checkpoint"] == "best.pt"


def test_check_shapes():
    assert check_shapes(32) == [(1, 3, 32, 32), (2, 3, 16, 24), (1, 3, 19, 29)]
    for crop, multiple in ((513, 1), (801, 1), (518, 14), (42, 14)):
        shapes = check_shapes(crop, multiple)
        assert all(side % multiple == 0 for shape in shapes for side in shape[2:])
        assert shapes[1][0] == 2 and all(side % 8 == 0 for side in shapes[1][2:])
        assert any(side % 8 for side in shapes[2][2:])


def test_dpt_torchscript_follows_the_input_size():
    """DPT's ViT resamples its position embeddings to the input: the traced file does too (sides of 14)."""
    from semiseg.catalog import METHODS
    from semiseg.engine.export import _torchscript
    from semiseg.models.dpt import DPTSegmenter

    supervised = METHODS.get("supervised")
    torch.manual_seed(0)
    network = DPTSegmenter("vit_small_patch14_dinov2", 5, embed_dim=24, depth=4, num_heads=2)
    module = Predictor(supervised(network, supervised.Params())).eval()
    shapes = check_shapes(42, 14)
    with single_thread():
        data, _ = _torchscript(module, torch.randn(*shapes[0]), {"side_multiple": 14})
        differences = parity("torchscript", data, module, shapes)
    assert max(diff for _, diff in differences) <= TOLERANCE


# ---------------------------------------------------------------- bad inputs: one line, exit 2, nothing written
def snapshot(folder):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def not_a_checkpoint(ckpt):
    torch.save({"weight": torch.zeros(2)}, ckpt.parent / "w.pt")
    return [ckpt.parent / "w.pt", "--format", "torchscript"]


def existing_output(ckpt):
    ckpt.with_name("best.onnx").write_bytes(b"keep")
    return [ckpt, "--format", "onnx"]


def no_onnxruntime(ckpt, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` raise ImportError
    return [ckpt, "--format", "onnx"]


def parity_fails(ckpt, monkeypatch):
    monkeypatch.setattr("semiseg.engine.export.TOLERANCE", -1.0)  # no file can pass it
    return [ckpt, "--format", "torchscript"]


def no_fallback_exporter(ckpt, monkeypatch):
    def legacy_fails(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::_upsample_bicubic2d_aa' to ONNX opset version 17 is not "
                           "supported")

    monkeypatch.setattr(torch.onnx, "export", legacy_fails)
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    return [ckpt, "--format", "onnx"]


BAD = {
    "missing_checkpoint": (lambda c, m: [c.parent / "nope.pt", "--format", "onnx"],
                           "error: semiseg checkpoint not found: .../nope.pt"),
    "not_a_checkpoint": (lambda c, m: not_a_checkpoint(c),
                         "error: .../w.pt: not a semiseg checkpoint (no 'method'/'config' entries)"),
    "unknown_network": (lambda c, m: [c, "--format", "torchscript", "--network", "teacher"],
                        "error: unknown network 'teacher' for method 'Supervised'; this checkpoint holds: model"),
    "out_in_missing_folder": (lambda c, m: [c, "--format", "torchscript", "--out", c.parent / "no" / "m.pt"],
                              "error: --out .../no/m.pt: the folder .../no does not exist; create it or give "
                              "another --out"),
    "existing_output": (lambda c, m: existing_output(c),
                        "error: .../best.onnx already exists; pass --overwrite to replace it, or give another --out"),
    "out_is_checkpoint": (lambda c, m: [c, "--format", "torchscript", "--out", c, "--overwrite"],
                          "error: --out .../best.pt is the checkpoint itself; give another file name"),
    "no_onnxruntime": (no_onnxruntime, "error: --format onnx needs the packages onnx and onnxruntime (onnxruntime is "
                                       "missing): pip install 'semiseg[export]'"),
    "no_fallback_exporter": (no_fallback_exporter, "error: the ONNX exporter cannot export this network "
                                                   "(RuntimeError: Exporting the operator ...); the torch.export-based "
                                                   "one needs onnxscript: pip install 'semiseg[export]'"),
    "parity_fails": (parity_fails, "error: the exported torchscript model differs from PyTorch by ... (> -1) at input "
                                   "1x3x32x32; nothing was written"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(case, ckpt, monkeypatch, capsys):
    if case in ("existing_output", "no_fallback_exporter"):
        pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    make, message = BAD[case]
    argv = make(ckpt, monkeypatch)
    before = snapshot(ckpt.parent)
    code, out, err = export(capsys, *argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    pattern = "".join(".*" if part == "..." else re.escape(part) for part in re.split(r"(\.\.\.)", message))
    assert re.fullmatch(pattern, lines[0]), (message, lines[0])
    assert snapshot(ckpt.parent) == before  # nothing written, nothing changed


def test_unknown_format_is_a_usage_error(ckpt, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(ckpt), "--format", "tflite"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.splitlines() == [
        "error: argument --format: invalid choice: 'tflite' (choose from 'onnx', 'torchscript') "
        "(see `semiseg export --help`)"]

