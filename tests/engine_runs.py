"""Helpers for the engine's end-to-end tests: tiny synthetic runs as subprocesses (torchrun or plain).

Subprocesses import this worktree's `src` (PYTHONPATH) and run single-threaded, so two
processes on the 2-core test machine do not fight over cores and CPU kernels sum in a
fixed order.
"""

import json
import os
import sys
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


def train_command(*args, nproc: int = 1) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    entry = launcher + ["-m", "semiseg.cli"] if nproc > 1 else [sys.executable, "-m", "semiseg.cli"]
    return entry + ["train", *TINY_RUN, *map(str, args)]


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
