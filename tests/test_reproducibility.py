"""Reproducibility switches: checkpointed RNG states continue every stream; `deterministic` toggles kernels."""

import random

import numpy as np
import torch

from semiseg.engine.checkpoint import save_atomic
from semiseg.engine.rng_state import capture_rng_state, restore_rng_state


def _draws():
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_rng_states_round_trip_through_a_checkpoint(tmp_path):
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    save_atomic({"rng": capture_rng_state()}, tmp_path / "rng.pt")
    expected = _draws()
    assert _draws() != expected  # the streams moved on
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    assert _draws() == expected


def test_deterministic_switch_turns_deterministic_algorithms_on_and_off():
    from semiseg.engine.environment import set_deterministic

    try:
        set_deterministic(True)
        assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
    finally:
        set_deterministic(False)
    assert not torch.are_deterministic_algorithms_enabled()
