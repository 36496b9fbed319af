"""Expected calibration error: a hand computation, an independent numpy reference, shards that add up."""

import numpy as np
import torch

from semiseg.engine.calibration import CalibrationBins
from semiseg.engine.evaluator import class_probabilities


def test_hand_computed():
    # 4 pixels, 2 classes; confidences 0.85 (correct), 0.75 (wrong), 0.55 (correct), 0.65 (correct)
    probs = torch.tensor([[0.85, 0.25, 0.55, 0.35], [0.15, 0.75, 0.45, 0.65]]).view(2, 1, 4)
    target = torch.tensor([[0, 0, 0, 1]])
    bins = CalibrationBins(num_bins=2)
    bins.update(probs, target)
    # one bin (0.5, 1]: mean confidence 2.8 / 4 = 0.70, accuracy 3 / 4 = 0.75 -> ECE 5 %
    assert abs(bins.ece() - 5.0) < 1e-5
    bins = CalibrationBins(num_bins=10)
    bins.update(probs, target)
    # one pixel per bin: |1 - 0.85| + |0 - 0.75| + |1 - 0.55| + |1 - 0.65| = 1.7, over 4 pixels
    assert abs(bins.ece() - 100 * 1.7 / 4) < 1e-5


def numpy_ece(conf, correct, num_bins):
    edges = np.linspace(0, 1, num_bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            total += inside.sum() * abs(correct[inside].mean() - conf[inside].mean())
    return 100 * total / conf.size


def test_matches_numpy_reference_ignores_255_and_shards_add_up():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 12, 9, generator=g) * 3
    target = torch.randint(0, 5, (2, 12, 9), generator=g)
    target[0, :2] = 255
    probs = logits.softmax(dim=1)
    whole = CalibrationBins()
    shards = [CalibrationBins(), CalibrationBins()]
    for i in range(2):
        whole.update(probs[i], target[i])
        shards[i].update(probs[i], target[i])
    conf, pred = probs.max(dim=1)
    keep = target != 255
    expected = numpy_ece(conf[keep].double().numpy(), (pred[keep] == target[keep]).double().numpy(), 15)
    assert abs(whole.ece() - expected) < 1e-9
    shards[0].sums += shards[1].sums  # what all_reduce does across two ranks
    assert abs(shards[0].ece() - expected) < 1e-9


def test_sliding_window_scores_become_probabilities():
    p = torch.tensor([0.2, 0.8]).view(1, 2, 1, 1)
    summed = torch.cat([p * 3, p * 1], dim=3)  # a pixel under 3 windows, one under 1
    assert torch.allclose(class_probabilities(summed, "sliding_window"), torch.cat([p, p], dim=3))
    logits = torch.tensor([0.0, 0.0]).view(1, 2, 1, 1)
    assert torch.allclose(class_probabilities(logits, "original"), torch.full((1, 2, 1, 1), 0.5))


def test_empty_is_zero():
    assert CalibrationBins().ece() == 0.0


def test_reliability_diagram_is_a_png(tmp_path):
    from semiseg.engine.calibration import reliability_diagram

    g = torch.Generator().manual_seed(1)
    probs = torch.randn(3, 6, 6, generator=g).softmax(dim=0)
    bins = CalibrationBins()
    bins.update(probs, torch.randint(0, 3, (6, 6), generator=g))
    reliability_diagram(bins.sums.numpy(), tmp_path / "r.png", "test")
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_returns_the_bin_sums():
    from semiseg.data.sample import Sample
    from semiseg.engine.evaluator import evaluate

    class One:
        def __len__(self):
            return 1

        def name(self, i):
            return "x"

        def load(self, i):
            return Sample(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8), "x")

    result = evaluate(lambda x: torch.zeros(x.shape[0], 2, *x.shape[-2:]), One(), 2, "original")
    assert result.calibration.shape == (3, 15) and result.calibration[0].sum() == 16
    assert abs(result.ece - 50.0) < 1e-9  # confidence 0.5 everywhere, every pixel correct (ties: class 0)
