"""Pictures of a batch (docs/method_interface.md: Pictures): `Method.explain`, U2PL's panels, `render_panels`,
and `show_batch` from a config (and a checkpoint)."""

import copy
import sys

import numpy as np
import pytest
import torch

from engine_runs import TINY_RUN, single_thread
from semiseg.components.entropy_partition import reliable_partition
from semiseg.config import load_config
from semiseg.data.presets import voc_palette
from semiseg.engine.batch_picture import render_panels, show_batch
from semiseg.engine.batch_plan import plan_from_config
from semiseg.engine.build import build_preset, build_train_batches
from semiseg.errors import SemisegError
from semiseg.methods.interface import StepContext
from semiseg.methods.panels import Panel
from semiseg.methods.u2pl import U2PL
from test_methods import NUM_CLASSES, SIZE, fake_batch, make

CLASS_NAMES = ["background", "grass", "water", "disk", "box"]
U2PL_RUN = [a for a in TINY_RUN[1:] if not a.startswith("--")] + ["method.name=u2pl", "model.heads.representation=8"]
CTX_SEMI = StepContext(5, 10, 2)  # past U2PL's one-epoch warm-up (I = 2)


def _state(method):
    return {k: v.detach().clone() for k, v in method.state_dict().items()}


def _assert_same_state(before, method):
    after = method.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key


# ------------------------------------------------------------------------------------ the default hook


@pytest.mark.parametrize("name,kinds", [("supervised", ["image", "labels", "labels"]),
                                        ("fixmatch", ["image", "labels", "image", "labels"])])
def test_default_explain_shows_images_labels_and_the_prediction(name, kinds):
    method = make(name)
    method.train()  # the caller's mode: train-mode BatchNorm must not move its statistics
    batch = fake_batch(method)
    before = _state(method)
    panels = method.explain(batch, StepContext(3, 10, 2))
    assert [p.kind for p in panels] == kinds
    assert method.training
    _assert_same_state(before, method)
    assert panels[0].data.shape == (SIZE, SIZE, 3) and 0.0 <= panels[0].data.min() <= panels[0].data.max() <= 1.0
    np.testing.assert_array_equal(panels[1].data, batch["labeled"]["mask"][0].numpy())
    method.eval()
    images = batch["unlabeled"]["image_w"] if "unlabeled" in batch else batch["labeled"]["image"]
    expected = method.predict(images)[0].argmax(0).numpy()
    np.testing.assert_array_equal(method.explain(batch, StepContext(3, 10, 2))[-1].data, expected)


def test_panel_refuses_an_unknown_kind_or_a_wrong_shape():
    with pytest.raises(ValueError, match="kind must be one of"):
        Panel("x", "histogram", np.zeros(3))
    with pytest.raises(ValueError, match="needs 2-D data"):
        Panel("x", "labels", np.zeros(3))


# ------------------------------------------------------------------------------------------------- U2PL


def _started_u2pl(variant=None):
    """A U2PL past its first semi-supervised step: teacher started, queues filled, BN statistics moved."""
    method = make("u2pl", variant=variant)
    method.train()
    loss, _ = method.training_step(fake_batch(method, 1), CTX_SEMI)
    loss.backward()
    method.after_step()
    return method


@pytest.mark.parametrize("started,variant", [(False, None), (True, None), (True, "released")],
                         ids=["before-the-teacher", "semi", "released"])
def test_u2pl_explain_panels_and_no_state_change(started, variant):
    method = _started_u2pl(variant) if started else make("u2pl", variant=variant)
    method.train()
    assert bool(method.semi_started) == started
    if variant is None:  # (the released one-hot bug leaves the queues empty on this batch)
        assert (int(method.queues.counts().sum()) > 0) == started
    batch = fake_batch(method)
    before = _state(method)
    rng = torch.get_rng_state()
    panels = method.explain(batch, CTX_SEMI)
    assert [p.kind for p in panels] == ["image", "labels", "scalar_map", "mask", "bars"]
    _assert_same_state(before, method)  # networks, teacher (and its counter), BN statistics, queues, flags
    assert torch.equal(torch.get_rng_state(), rng)
    image, pseudo, entropy, mask, bars = panels
    assert image.data.shape == (SIZE, SIZE, 3) and pseudo.data.shape == entropy.data.shape == (SIZE, SIZE)
    assert set(np.unique(mask.data)) <= {0, 1, 2, 255} and mask.extras["names"] == ["neither", "reliable",
                                                                                     "unreliable"]
    np.testing.assert_array_equal(bars.data, method.queues.counts().numpy())
    assert bars.extras["class_indices"] and bars.extras["labels"] == list(range(NUM_CLASSES))
    assert "α_t = 10.0 %" in entropy.title and np.isfinite(entropy.extras["threshold"])


def test_u2pl_partition_panel_agrees_with_reliable_partition():
    method = _started_u2pl()
    batch = fake_batch(method)
    maps = method.unlabeled_maps(batch, CTX_SEMI)
    panels = method.explain(batch, CTX_SEMI)
    partition = reliable_partition(maps["entropy"], maps["valid"], maps["alpha"])  # percentiles over the batch
    np.testing.assert_array_equal(panels[2].data, maps["entropy"][0].numpy())
    assert panels[2].extras["threshold"] == pytest.approx(float(partition.high_threshold))
    mask = panels[3].data
    valid = maps["valid"][0].numpy()
    np.testing.assert_array_equal(mask == 255, ~valid)
    np.testing.assert_array_equal(mask == 2, partition.unreliable[0].numpy())
    np.testing.assert_array_equal(mask == 1, partition.reliable[0].numpy() & ~partition.unreliable[0].numpy())
    np.testing.assert_array_equal(mask == 0, valid & ~partition.reliable[0].numpy() & ~partition.unreliable[0].numpy())
    assert (mask == 1).any() and (mask == 2).any() and (mask == 0).any()


@pytest.mark.parametrize("started,step", [(False, 5), (False, 8), (True, 5), (True, 8)])
def test_u2pl_explain_sees_what_the_step_sees(started, step):
    """The kept ratio and α of explain's maps are the step's (a copy takes the step), CutMixed or not."""
    method = _started_u2pl() if started else make("u2pl")
    method.train()
    batch = fake_batch(method)
    ctx = StepContext(step, 10, 2)
    maps = method.unlabeled_maps(batch, ctx)
    _, logs = copy.deepcopy(method).training_step(batch, ctx)
    kept = maps["partition"].keep.float().sum() / maps["valid"].float().sum()
    assert float(logs["alpha"]) == pytest.approx(maps["alpha"])
    assert float(logs["kept_ratio"]) == pytest.approx(float(kept), abs=1e-6)
    assert maps["mixed"] == (step == 8)  # the step's coin: heads at t = 8, tails at t = 5
    assert torch.equal(maps["image"], batch["unlabeled"]["image_w"]) == (step != 8)


def test_u2pl_training_step_is_unchanged_by_the_shared_helper():
    """`_mixed_targets` only moved code: the step's pseudo-labels are still the eval-mode teacher's argmax."""
    method = _started_u2pl()
    batch = fake_batch(method)
    for step in (5, 8):  # the coin: tails, heads
        ctx = StepContext(step, 10, 2)
        with method._teacher_mode(False) as teacher, torch.no_grad():
            logits = teacher(batch["unlabeled"]["image_w"])
        _, pseudo, valid, _ = method._mixed_targets(batch["unlabeled"], logits, ctx)
        expected = torch.where(batch["unlabeled"]["valid"], logits.argmax(1), 255)
        if step == 8:
            assert method._cutmix_coin(ctx)
            box = batch["unlabeled"]["box"][:, 0]
            expected = torch.where(box, expected.roll(-1, 0), expected)
        assert torch.equal(pseudo, expected)


# ------------------------------------------------------------------------------------------- rendering


def _panels():
    g = np.random.default_rng(0)
    labels = g.integers(0, NUM_CLASSES, (16, 16))
    labels[:2] = 255
    entropy = g.random((16, 16)).astype(np.float32)
    return [Panel("image", "image", g.random((16, 16, 3))), Panel("labels", "labels", labels),
            Panel("entropy", "scalar_map", entropy, {"threshold": 0.5, "label": "nats"}),
            Panel("partition", "mask", np.where(labels == 255, 255, labels % 3),
                  {"names": ["neither", "reliable", "unreliable"]}),
            Panel("queues", "bars", np.arange(NUM_CLASSES), {"labels": list(range(NUM_CLASSES)),
                                                              "class_indices": True, "ylabel": "keys"})]


def test_render_panels_is_deterministic(tmp_path):
    first = render_panels(_panels(), tmp_path / "a.png", voc_palette(NUM_CLASSES), CLASS_NAMES)
    second = render_panels(_panels(), tmp_path / "b.png", voc_palette(NUM_CLASSES), CLASS_NAMES)
    data = first.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data == second.read_bytes()
    assert b"matplotlib" not in data  # no Software metadata
    render_panels(_panels()[:2], tmp_path / "c.png", voc_palette(NUM_CLASSES), None)  # no class names
    from PIL import Image

    assert Image.open(first).size[0] > Image.open(tmp_path / "c.png").size[0]


def test_render_panels_without_matplotlib_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(SemisegError, match=r"^pictures need matplotlib: pip install 'semiseg\[report\]'$"):
        render_panels(_panels(), tmp_path / "a.png", voc_palette(NUM_CLASSES), CLASS_NAMES)
    assert not (tmp_path / "a.png").exists()


# ----------------------------------------------------------------------------------------- show_batch


def test_show_batch_refuses_a_step_outside_the_run_and_a_non_png(tmp_path):
    with pytest.raises(SemisegError, match=r"--step 7 is outside the run's steps 0\.\.6"):
        show_batch(TINY_RUN[0], U2PL_RUN + ["train.total_iters=7"], tmp_path / "x.png", step=7)
    with pytest.raises(SemisegError, match="--out must name a .png file"):
        show_batch(TINY_RUN[0], U2PL_RUN, tmp_path / "x.jpg")


def test_show_batch_end_to_end_with_and_without_a_checkpoint(tmp_path, monkeypatch):
    seen = []
    explain = U2PL.explain

    def recording(self, batch, ctx):
        seen.append((batch, ctx, {k: v.clone() for k, v in self.state_dict().items()}, self.training))
        return explain(self, batch, ctx)

    monkeypatch.setattr(U2PL, "explain", recording)
    overrides = U2PL_RUN + ["train.total_iters=4"]
    with single_thread():
        out = show_batch(TINY_RUN[0], overrides, tmp_path / "pictures" / "step1.png", step=1)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    batch, ctx, _, training = seen[-1]
    assert not training and (ctx.step, ctx.total) == (1, 4) and ctx.iters_per_epoch >= 1

    # the batch of step 1 of an uninterrupted run: the loaders started at step 0, second item
    cfg = load_config(TINY_RUN[0], overrides)
    preset = build_preset(cfg)
    splits = preset.build(cfg.data)
    stream = build_train_batches(cfg, preset, splits, make("u2pl"), 0, plan_from_config(cfg.train, 1))
    next(stream)
    expected = next(stream)[0]
    stream.close()
    for part in ("labeled", "unlabeled"):
        for key, value in expected[part].items():
            assert torch.equal(batch[part][key], value), (part, key)

    # a 2-iteration run's latest.pt: its method state, and its step (2) by default
    from semiseg.engine.trainer import Trainer

    run = tmp_path / "run"
    with single_thread():
        Trainer(load_config(TINY_RUN[0], overrides[:-1] + ["train.total_iters=2", f"output_dir={run}"]),
                progress=False).train()
        out = show_batch(TINY_RUN[0], overrides, tmp_path / "trained.png", checkpoint=run / "latest.pt")
    assert out.is_file()
    _, ctx, state, _ = seen[-1]
    saved = torch.load(run / "latest.pt", map_location="cpu", weights_only=True)
    assert ctx.step == 2 and int(saved["step"]) == 2
    assert bool(state["semi_started"]) or int(state["teacher.updates"]) == 0
    for key, value in saved["method"].items():
        assert torch.equal(state[key], value), key
    with pytest.raises(SemisegError, match="checkpoint was trained with method 'u2pl'"):
        show_batch(TINY_RUN[0], overrides + ["method.name=supervised"], tmp_path / "x.png", checkpoint=run)


@pytest.mark.parametrize("name, extra", [("u2pl", []), ("csl", []), ("supervised", [])])
def test_show_on_val_images_writes_one_picture_per_image(tmp_path, name, extra):
    overrides = [a for a in U2PL_RUN if not a.startswith("method.name")] + [f"method.name={name}", *extra]
    with single_thread():
        written = show_batch(TINY_RUN[0], overrides, tmp_path / "val.png", val_images=2)
    assert [p.name for p in written] == ["val_0.png", "val_1.png"] and all(p.is_file() for p in written)


def test_val_batch_is_the_unaugmented_image():
    from semiseg.data.sample import Sample
    from semiseg.engine.batch_picture import val_batch
    from semiseg.methods.interface import Views

    image = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    sample = Sample(image, np.ones((4, 6), dtype=np.uint8), "x")
    views = Views(unlabeled=True, strong=2, box=lambda h, w: torch.zeros(h, w, dtype=torch.bool))
    batch = val_batch(sample, views, "cpu")
    u = batch["unlabeled"]
    assert u["image_w"].shape == (2, 3, 4, 6) and torch.equal(u["image_s"][:, 1], u["image_w"])
    assert not u["box"].any() and u["valid"].all() and torch.equal(batch["labeled"]["image"], u["image_w"])
