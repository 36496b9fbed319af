"""Registry-driven checks: every registered method, in every declared variant, takes CPU steps on a tiny model.

For each (method, variant): the loss is finite, every trainable parameter gets a gradient, teachers
get none, every trainable parameter is in exactly one update, the state round-trips, and a step taken
after a save/load equals the step taken without it.
"""

import copy

import pytest
import torch

from semiseg.methods.interface import StepContext
from semiseg.catalog import METHODS
from semiseg.components.cutmix import UniMatchBox
from semiseg.config import load_config
from semiseg.engine.build import build_method
from semiseg.engine.schedule import set_lr
from semiseg.errors import SemisegError
from semiseg.methods.interface import check_updates

NUM_CLASSES, SIZE, B = 5, 32, 2


def tiny_cfg(name, variant=None):
    method_cls = METHODS.get(name)
    overrides = [f"method.{key}={value}" for key, value in (method_cls.variants.get(variant) or {}).items()]
    overrides += [f"model.heads.{head}={8 if head == 'representation' else 'true'}" for head in method_cls.required_heads]
    return load_config(None, ["train.total_iters=1", f"method.name={name}", "model.encoder=resnet18", "model.pretrained=null",
                              "model.aspp_channels=8", "model.decoder_channels=8", "model.low_level_channels=8",
                              *overrides])


def fake_batch(method, seed=0):
    """A batch as the data pipeline makes it for `method.views()` (boxes always present, so mixing is exercised)."""
    g = torch.Generator().manual_seed(seed)
    batch = {"labeled": {"image": torch.randn(B, 3, SIZE, SIZE, generator=g),
                         "mask": torch.randint(0, NUM_CLASSES, (B, SIZE, SIZE), generator=g)}}
    batch["labeled"]["mask"][:, :4] = 255
    batch["labeled"]["index"] = torch.arange(B)
    views = method.views()
    if views.unlabeled:
        torch.manual_seed(seed)
        batch["unlabeled"] = {"image_w": torch.randn(B, 3, SIZE, SIZE, generator=g),
                              "valid": torch.ones(B, SIZE, SIZE, dtype=torch.bool), "index": torch.arange(B)}
        batch["unlabeled"]["valid"][:, -3:] = False
        if views.strong:
            batch["unlabeled"]["image_s"] = torch.randn(B, views.strong, 3, SIZE, SIZE, generator=g)
        if views.num_boxes:
            box = UniMatchBox(p=1.0) if isinstance(views.box, UniMatchBox) else views.box
            batch["unlabeled"]["box"] = torch.stack([torch.stack([box(SIZE, SIZE) for _ in range(views.num_boxes)])
                                                     for _ in range(B)])
        if views.alternative is not None:  # a cover mask per sample, about half covered
            batch["unlabeled"]["cover"] = torch.rand(B, SIZE, SIZE, generator=g) < 0.5
    return batch


def make(name, seed=0, variant=None):
    torch.manual_seed(seed)
    return build_method(tiny_cfg(name, variant), NUM_CLASSES)


VARIANTS = [(name, None) for name in METHODS.names()] + \
    [(name, variant) for name in METHODS.names() for variant in METHODS.get(name).variants]
IDS = [f"{name}-{variant or 'default'}" for name, variant in VARIANTS]


@pytest.mark.parametrize("name,variant", VARIANTS, ids=IDS)
def test_one_step_gradients_and_finite_loss(name, variant):
    method = make(name, variant=variant)
    method.train()
    # a lower threshold so the unsupervised terms are active on a random network
    if hasattr(method.params, "threshold"):
        method.params.threshold = 0.0
    updates = method.updates(tiny_cfg(name, variant).train)
    check_updates(method, updates)
    batch = fake_batch(method)
    for update in updates:
        for p in method.parameters():
            p.grad = None
        loss, logs = update.loss(batch, StepContext.at(0.5))  # past every warm-up phase
        assert torch.isfinite(loss)
        assert all(torch.isfinite(torch.as_tensor(v)) for v in logs.values())
        loss.backward()
        stepped = {id(p) for group in update.optimizer.param_groups for p in group["params"]}
        for pname, p in method.named_parameters():
            if id(p) in stepped:
                assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name}: no gradient for {pname}"
            elif not p.requires_grad:
                assert p.grad is None, f"{name}: teacher parameter {pname} received a gradient"


@pytest.mark.parametrize("name,variant", VARIANTS, ids=IDS)
def test_state_round_trip_and_resumed_step(name, variant):
    train_cfg = tiny_cfg(name, variant).train

    def step(method, updates, batch, t):
        ctx = StepContext(t, 10, 2)  # t = 2, 3: past a one-epoch warm-up (I = 2), the first semi-supervised steps
        for update in updates:
            set_lr(update.optimizer, t, 10, 0.9, update.schedule)
            loss, _ = update.loss(batch, ctx)
            update.optimizer.zero_grad()
            loss.backward()
            update.optimizer.step()
        method.after_step()

    a = make(name, variant=variant)
    a.train()
    updates_a = a.updates(train_cfg)
    step(a, updates_a, fake_batch(a, 0), 2)
    # save, then rebuild from scratch and load: the next step must match exactly
    state = copy.deepcopy(a.state_dict())
    opt_states = [copy.deepcopy(u.optimizer.state_dict()) for u in updates_a]
    b = make(name, seed=123, variant=variant)
    b.load_state_dict(state)
    b.train()
    updates_b = b.updates(train_cfg)
    for update, opt_state in zip(updates_b, opt_states):
        update.optimizer.load_state_dict(opt_state)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    torch.manual_seed(7)
    step(a, updates_a, fake_batch(a, 1), 3)
    torch.manual_seed(7)
    step(b, updates_b, fake_batch(b, 1), 3)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), f"{name}: {key} differs after a resumed step"


def test_every_variant_is_a_valid_set_of_method_keys():
    for name in METHODS.names():
        for variant, values in METHODS.get(name).variants.items():
            params = make(name, variant=variant).params
            for key, value in values.items():
                assert getattr(params, key) == value, (name, variant, key)


def test_param_groups_split_backbone_and_head():
    method = make("supervised")
    groups = method.param_groups(0.01, 10.0)
    assert [g["name"] for g in groups] == ["backbone", "head"]
    assert groups[0]["lr"] == pytest.approx(0.01)
    assert groups[1]["lr"] == pytest.approx(0.1)
    n_all = sum(1 for p in method.parameters() if p.requires_grad)
    assert sum(len(g["params"]) for g in groups) == n_all


def test_fixmatch_targets_in_the_box_come_from_the_partner():
    """With τ = 0, the loss equals a hand-built masked CE against rolled pseudo-labels in the box."""
    from semiseg.components.losses import masked_ce, supervised_ce

    method = make("fixmatch")
    method.params.threshold = 0.0
    method.eval()  # BN in eval mode so that separate forwards give identical logits
    batch = fake_batch(method)
    u = batch["unlabeled"]
    with torch.no_grad():
        loss, _ = method.training_step(batch, StepContext.at(0.0))
        z_w = method.model(u["image_w"])
        pseudo = z_w.argmax(1)
        box = u["box"][:, 0]
        target = torch.where(box, pseudo.roll(-1, 0), pseudo)
        valid = torch.where(box, u["valid"].roll(-1, 0), u["valid"])
        x_s = torch.where(box[:, None], u["image_s"][:, 0].roll(-1, 0), u["image_s"][:, 0])
        expected_s = masked_ce(method.model(x_s), target, torch.ones_like(valid, dtype=torch.float), valid)
        expected = 0.5 * supervised_ce(method.model(batch["labeled"]["image"]), batch["labeled"]["mask"]) \
            + 0.5 * expected_s
    assert torch.isclose(loss, expected, atol=1e-5)


@pytest.mark.parametrize("name", METHODS.names())
def test_networks_cover_every_segmentation_network_and_predictor_picks_one(name):
    method = make(name).eval()
    nets = method.networks()
    assert "model" in nets and nets["model"] is method.model
    # every network's weights are in the checkpoint under its name, and nothing else holds a model
    keys = method.state_dict().keys()
    for net_name in nets:
        assert any(k.startswith(net_name + ".") for k in keys), net_name
    prefixes = {k.split(".")[0] for k in keys if k.endswith("conv_stem.weight") or k.endswith("conv1.weight")}
    assert prefixes <= set(nets), prefixes
    x = torch.randn(1, 3, SIZE, SIZE)
    assert torch.equal(method.predictor()(x), method.predict(x))
    for net_name, net in nets.items():
        assert torch.equal(method.predictor(net_name)(x), net(x))
    with pytest.raises(SemisegError, match="unknown network 'nope'.*model"):
        method.predictor("nope")


def test_teacher_methods_expose_the_teacher_and_cps_its_second_branch():
    assert set(make("mean_teacher").networks()) == {"model", "teacher"}
    assert set(make("unimatch_v2").networks()) == {"model", "teacher"}
    assert set(make("cps").networks()) == {"model", "model2"}
    assert set(make("fixmatch").networks()) == {"model"}
