"""Gradient accumulation and the global batch plan: total batch 8 as 1 pass x 8 or 4 passes x 2."""

import pytest
import torch
from torch import nn

from engine_runs import TINY_RUN, single_thread
from semiseg.catalog import METHODS
from semiseg.config import load_config
from semiseg.engine.batch_plan import plan_batches
from semiseg.engine.trainer import Trainer
from semiseg.errors import SemisegError
from semiseg.methods.supervised import Supervised


class SupervisedFixedNorm(Supervised):
    """Supervised with BatchNorm on its running statistics: a pass's output then does not depend on
    which other images share the pass, so 1 x 8 and 4 x 2 compute the same function. (With batch
    statistics, accumulation changes BN by construction, in any framework.)"""

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self


def _train(tmp_path, name, *overrides):
    args = [a for a in TINY_RUN[1:] if not a.startswith("--")]
    cfg = load_config(TINY_RUN[0], [*args, "method.name=supervised_fixed_norm", "train.total_batch_size=8",
                                    "train.total_iters=2", f"output_dir={tmp_path / name}", *overrides])
    with single_thread():
        trainer = Trainer(cfg, progress=False)
        summary = trainer.train()
    return summary, {k: v.detach().clone() for k, v in trainer.method.state_dict().items()}


def test_total_batch_8_as_1x8_equals_4x2(tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS._items, "supervised_fixed_norm", SupervisedFixedNorm)
    whole, weights_whole = _train(tmp_path, "one_pass")
    split, weights_split = _train(tmp_path, "four_passes", "train.micro_batch_size=2")
    assert whole["accumulation_steps"] == 1 and split["accumulation_steps"] == 4
    # Same images, same augmentations, loss of each pass divided by 4: only the float32 summation
    # order of the gradient differs (4 partial sums of 2 images vs one of 8), ~1e-7 relative.
    changed = 0
    for key, value in weights_whole.items():
        torch.testing.assert_close(weights_split[key], value, atol=1e-5, rtol=0, msg=key)
        changed += int(value.is_floating_point() and not torch.equal(value, weights_split[key]))
    assert changed, "the runs should differ at least by rounding"


def test_plan_splits_the_global_batch_over_processes_and_passes():
    plan = plan_batches(total_batch_size=16, unlabeled_batch_size=32, micro_batch_size=2, world_size=4)
    assert (plan.accumulation_steps, plan.labeled_per_pass, plan.unlabeled_per_pass) == (2, 2, 4)
    assert plan_batches(8, None, None, 2).accumulation_steps == 1  # default: one pass per process
    with pytest.raises(SemisegError, match="not divisible by the world size 3"):
        plan_batches(8, None, None, 3)
    with pytest.raises(SemisegError, match="micro_batch_size=3 must divide"):
        plan_batches(8, None, 3, 1)
    with pytest.raises(SemisegError, match="unlabeled_batch_size=6 must split into"):
        plan_batches(8, 6, 2, 2)
