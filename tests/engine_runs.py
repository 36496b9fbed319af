"""Helpers for the engine's end-to-end tests: tiny synthetic runs as subprocesses (torchrun or plain).

Subprocesses import this worktree's `src` (PYTHONPATH) and run single-threaded, so two
processes on the 2-core test machine do not fight over cores and CPU kernels sum in a
fixed order.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

# A 0.3 M-parameter encoder, 32 px scenes, no rescaling (crop = image: no padded pixels, so every
# pass of a split batch normalises its loss by the same pixel count as the whole batch would).
TINY_RUN = ["configs/synthetic/supervised.yaml", "model.encoder=mobilenetv3_small_050", "model.pretrained=null",
            "model.aspp_channels=8", "model.decoder_channels=8", "model.low_level_channels=8",
            "data.num_workers=0", "data.synthetic.num_train=16", "data.synthetic.num_val=5",
            "data.synthetic.image_size=32", "data.crop_size=32", "data.scale_range=[1.0,1.0]", "data.num_labeled=8",
            "train.log_every=1", "--no-progress"]


def subprocess_env() -> dict:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def train_command(*args, nproc: int = 1, script: str | None = None) -> list[str]:
    """`semiseg train TINY_RUN args` (or `python script train ...`), under torchrun when nproc > 1."""
    module = [script] if script else ["-m", "semiseg.cli"]
    if nproc > 1:
        entry = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *module]
    else:
        entry = [sys.executable, *module]
    return entry + ["train", *TINY_RUN, *map(str, args)]


def checkpoint_step(path: Path, seen: dict) -> int:
    """The step of `path` (latest.pt, replaced atomically), read again only when the file changed; -1 if absent."""
    try:
        stamp = path.stat().st_mtime_ns
    except FileNotFoundError:
        return -1
    if seen.get("stamp") != stamp:
        seen.update(stamp=stamp, step=int(torch.load(path, map_location="cpu", weights_only=True)["step"]))
    return seen["step"]


def kill_at_checkpoint(command: list[str], output_dir: Path, step: int, timeout: float = 180.0) -> str:
    """Start (or resume) a run; SIGKILL it once its latest.pt holds iteration `step` or later; returns stdout."""
    latest, seen = Path(output_dir) / "latest.pt", {}
    proc = subprocess.Popen(command, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if checkpoint_step(latest, seen) >= step:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run was not killed mid-run (rc {proc.returncode}): {err[-2000:]}"
    return out


def train_losses(output_dir: Path) -> dict[int, float]:
    """step -> logged loss (the last line wins when a resumed run logged a step again)."""
    losses = {}
    for line in (Path(output_dir) / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["kind"] == "train":
            losses[record["step"]] = record["loss"]
    return losses


def final_state(output_dir: Path) -> dict:
    return torch.load(Path(output_dir) / "latest.pt", map_location="cpu", weights_only=True)


class single_thread:
    """torch on one thread inside the block (2 threads on a shared, loaded 2-core machine spin-wait)."""

    def __enter__(self):
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.threads)
