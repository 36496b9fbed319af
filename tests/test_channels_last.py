"""`train.channels_last=true`: NHWC weights and image batches, the same training up to float rounding."""

import pytest
import torch

from engine_runs import TINY_RUN, final_state, single_thread, train_losses
from semiseg.cli import main
from semiseg.methods.supervised import Supervised


# 64 px, not TINY_RUN's 32: BatchNorm over 1x1 deep maps (variance near eps) blows float32 rounding
# up by 1e3 within two steps, whatever the layout (the same effect test_distributed avoids)
NO_TINY_MAPS = ["data.synthetic.image_size=64", "data.crop_size=64"]


def _train(tmp_path, name, *extra):
    out = tmp_path / name
    with single_thread():
        code = main(["train", *TINY_RUN, "train.total_batch_size=4", "train.total_iters=3", f"output_dir={out}",
                     *NO_TINY_MAPS, *extra])
    assert code == 0
    return out


def test_channels_last_trains_in_nhwc_and_matches_the_default_layout(tmp_path, monkeypatch):
    from conftest import REPO

    monkeypatch.chdir(REPO)
    real_step, layouts = Supervised.training_step, []

    def recording_step(self, batch, ctx):
        conv = next(m for m in self.model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 1)
        layouts.append((conv.weight.is_contiguous(memory_format=torch.channels_last),
                        batch["labeled"]["image"].is_contiguous(memory_format=torch.channels_last)))
        return real_step(self, batch, ctx)

    monkeypatch.setattr(Supervised, "training_step", recording_step)
    nhwc = _train(tmp_path, "nhwc", "train.channels_last=true")
    assert layouts and all(weight and image for weight, image in layouts)
    layouts.clear()
    nchw = _train(tmp_path, "nchw")
    assert layouts and not any(weight for weight, _ in layouts)

    a, b = train_losses(nhwc), train_losses(nchw)
    assert a.keys() == b.keys() == {1, 2, 3}
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-4)
    wa, wb = final_state(nhwc)["method"], final_state(nchw)["method"]
    for key, value in wa.items():
        if value.is_floating_point():
            assert torch.allclose(value, wb[key], rtol=1e-3, atol=1e-4), key
