"""semiseg: semi-supervised semantic segmentation in one framework.

The Python API (the command line is a thin layer over it):

    from semiseg import Segmenter, load, load_config, train
    cfg = load_config("configs/synthetic/fixmatch.yaml", ["output_dir=runs/api"])
    summary = train(cfg)                       # what `semiseg train` runs; returns summary.json's content
    segment = Segmenter("runs/api/best.pt")    # a checkpoint as a function: RGB uint8 (H, W, 3) -> class ids (H, W)
    labels = segment(image)
    model = load("runs/api/best.pt")           # predict(image) -> int64 (H, W), predict_proba(image) -> (C, H, W)

`evaluate_checkpoint(path)` scores a checkpoint on its val set (`semiseg eval`).
"""

__version__ = "0.1.0"

_API = {
    "load_config": ("semiseg.config", "load_config"),
    "train": ("semiseg.engine.trainer", "train"),
    "evaluate_checkpoint": ("semiseg.engine.inference", "evaluate_checkpoint"),
    "Segmenter": ("semiseg.engine.inference", "Segmenter"),
    "load": ("semiseg.engine.inference", "load"),
}
__all__ = ["__version__", *_API]


def __getattr__(name):  # imported on first use, so `import semiseg` (and the CLI's start) stays light
    if name not in _API:
        raise AttributeError(f"module 'semiseg' has no attribute {name!r}")
    import importlib

    module, attribute = _API[name]
    return getattr(importlib.import_module(module), attribute)
