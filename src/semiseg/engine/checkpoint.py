"""Checkpoints: atomic writes (temp file + rename) and safe loading (weights_only=True)."""

from __future__ import annotations

import contextlib
import errno
import io
import os
from pathlib import Path

import torch

from ..errors import SemisegError
from ..files import safe_torch_load

_REASONS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
            errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
            errno.EPERM: "permission denied", errno.ENOTDIR: "a part of the path is a file, not a folder",
            errno.EEXIST: "a file of that name is in the way", errno.EISDIR: "it is a folder"}


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def write_error_line(path: str | Path, exc: OSError, needed: int | None = None, note: str = "",
                     setting: str = "output_dir") -> str:
    """One line for a failed write: the file, the reason (and for a full disk the size being written),
    `note` (what is intact), the fix (`setting`: the option that chose the folder)."""
    reason = _REASONS.get(exc.errno) or (exc.strerror or str(exc) or type(exc).__name__).lower()
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = f"free space or set {setting} elsewhere"
        if needed is not None:
            reason += f" (needs {_megabytes(needed)})"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = f"make it writable or set {setting} elsewhere"
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST):
        fix = f"set {setting} to a folder (or move the file away)"
    else:
        fix = f"set {setting} elsewhere"
    return f"cannot write {path}: {reason}; {note + '; ' if note else ''}{fix}"


@contextlib.contextmanager
def reporting_write_errors(path: str | Path, note: str = "", setting: str = "output_dir"):
    """Turn an OSError of the writes inside into one SemisegError line naming `path`."""
    try:
        yield
    except OSError as exc:
        raise SemisegError(write_error_line(path, exc, note=note, setting=setting)) from None


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def checkpoint_step(path: str | Path) -> int | None:
    """The iteration a checkpoint file holds (memory-mapped: its tensors are not read), None if unreadable."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["step"])
    except Exception:
        return None


def _kept(path: Path) -> str:
    """What a failed write leaves: the previous file (a checkpoint with its iteration) or nothing."""
    if not path.is_file():
        return f"no {path.name} was written yet"
    step = checkpoint_step(path) if path.suffix == ".pt" else None
    return f"the previous {path.name}{f' (iteration {step})' if step is not None else ''} is intact"


def write_atomic(path: str | Path, data) -> None:
    """Write bytes to `<path>.tmp`, fsync, then rename: a crash, a kill or a Ctrl-C never leaves a
    half-written `path`. A failed write (disk full, read-only, a file in the way) removes the temporary
    file, leaves `path` as it was and raises one SemisegError line ("cannot write <path>: <reason>
    (needs <size>); the previous <name> is intact; <fix>")."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _remove_quietly(tmp)
        raise SemisegError(write_error_line(path, exc, needed=len(data), note=_kept(path))) from None
    except BaseException:  # Ctrl-C (or another interruption) mid-write: only the temporary file goes
        _remove_quietly(tmp)
        raise


def save_atomic(obj: dict, path: str | Path) -> None:
    """`obj` serialised in memory (so its size is known), then written with `write_atomic`."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getbuffer()
    try:
        write_atomic(path, data)
    finally:
        data.release()


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
