"""Checkpoints: atomic writes (temp file + rename) and safe loading (weights_only=True)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import SemisegError
from ..files import safe_torch_load


def save_atomic(obj: dict, path: str | Path) -> None:
    """Write to `<path>.tmp`, fsync, then rename: a crash never leaves a half-written file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict:
    ckpt = safe_torch_load(path, "semiseg checkpoint")
    if not isinstance(ckpt, dict) or "method" not in ckpt or "config" not in ckpt:
        raise SemisegError(f"{path}: not a semiseg checkpoint (no 'method'/'config' entries)")
    return ckpt


def check_compatible(ckpt: dict, num_classes: int, encoder: str, origin: str) -> None:
    """Stop with one line when a checkpoint's model differs from the one being built."""
    meta = ckpt.get("meta", {})
    if meta.get("num_classes") != num_classes:
        raise SemisegError(f"{origin}: checkpoint model has {meta.get('num_classes')} classes, the dataset has "
                           f"{num_classes}; use a checkpoint trained on this dataset (or set data.dataset to match)")
    if meta.get("encoder") not in (None, encoder):
        raise SemisegError(f"{origin}: checkpoint encoder is '{meta.get('encoder')}', the config asks for "
                           f"'{encoder}'; set model.encoder={meta.get('encoder')}")


def load_method_state(method: torch.nn.Module, state: dict, origin: str) -> None:
    if hasattr(method, "upgrade_state"):  # checkpoints of an earlier layout
        state = method.upgrade_state(dict(state))
    own = method.state_dict()
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    missing = [k for k in own if k not in state]
    if wrong or missing:
        key = (wrong or missing)[0]
        detail = (f"shape {tuple(state[key].shape)} vs {tuple(own[key].shape)}" if wrong else "missing")
        raise SemisegError(f"{origin}: checkpoint does not fit this model ({key}: {detail}); "
                           "was it trained with another method, encoder or class count?")
    method.load_state_dict(state, strict=False)


def check_resume_fingerprint(saved: dict | None, current: dict, origin: str) -> None:
    """Stop with one line when the config being resumed builds a different model or data stream.

    `saved` and `current` map names (model.encoder, data.crop_size, ...) to values; a key
    missing from an older checkpoint is not compared.
    """
    if not saved:
        return
    differences = [f"{key}: checkpoint {saved[key]!r}, config {value!r}"
                   for key, value in current.items() if key in saved and saved[key] != value]
    if differences:
        raise SemisegError(f"cannot resume from {origin}: the config differs from the checkpoint's in "
                           f"{'; '.join(differences)}. Resume with the original values or use a new output_dir")
