"""CSL as a method (docs/methods/csl.md): UniMatch V1's loop with CSL's weights, and TMP on the second view."""

import copy

import torch

from semiseg.components.perturbation import append_dropped_copy
from semiseg.components.trusted_mask import TrustedMaskView
from semiseg.methods.interface import StepContext
from test_methods import fake_batch, make

CTX = StepContext.at(0.5)


def test_threshold_selection_without_tmp_is_unimatch():
    """selection: threshold, tmp: false: the same forwards and losses as UniMatch V1, to the bit."""
    csl = make("csl", variant="no_tmp")
    csl.params.selection = "threshold"
    unimatch = make("unimatch")
    unimatch.model.load_state_dict(csl.model.state_dict())
    for method in (csl, unimatch):
        method.train()
        method.params.threshold = 0.5  # some pixels pass on a random network
    batch = fake_batch(unimatch)
    torch.manual_seed(3)
    loss_u, logs_u = unimatch.training_step(batch, CTX)
    torch.manual_seed(3)
    loss_c, logs_c = csl.training_step(batch, CTX)
    assert torch.equal(loss_u, loss_c)
    for key in ("loss_x", "loss_s1", "loss_s2", "loss_fp", "mask_ratio"):
        assert torch.equal(logs_u[key], logs_c[key]), key


def test_views_declare_the_tmp_view():
    method = make("csl")
    views = method.views()
    assert isinstance(views.alternative, TrustedMaskView) and views.strong == 2 and views.alternative_index == 1
    assert views.alternative.prob == 0.5 and views.alternative.block_size == 32 and views.alternative.cover_ratio == 0.7
    assert make("csl", variant="no_tmp").views().alternative is None


def test_trusted_mask_hides_only_reliable_valid_covered_pixels():
    method = make("csl")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 8, generator=g)
    pseudo = torch.randint(0, 5, (2, 8, 8), generator=g)
    weight = torch.where(torch.rand(2, 8, 8, generator=g) < 0.5, torch.ones(2, 8, 8), torch.full((2, 8, 8), 0.3))
    valid = torch.ones(2, 8, 8, dtype=torch.bool)
    valid[:, -2:] = False
    cover = torch.zeros(2, 8, 8, dtype=torch.bool)
    cover[0, :4] = True  # sample 0 is a TMP view; sample 1 a standard one (no cover)
    out, targets, hidden = method.trusted_mask(x, (pseudo, weight, valid), cover, "roll")
    region = cover & (weight >= 1) & valid
    assert region.any() and not region[1].any()
    assert (out[:, :, region[0].nonzero(as_tuple=True)[0], region[0].nonzero(as_tuple=True)[1]][0] == 0).all()
    keep = ~region.unsqueeze(1).expand_as(x)
    assert torch.equal(out[keep], x[keep])
    assert all(torch.equal(a, b) for a, b in zip(targets, (pseudo, weight, valid)))  # zero fill: targets stay
    assert abs(float(hidden) - region.sum().item() / valid.sum().item()) < 1e-6

    method.params.tmp_fill = "partner"
    out, (p2, w2, v2), _ = method.trusted_mask(x, (pseudo, weight, valid), cover, "roll")
    assert torch.equal(out[0][:, region[0]], x[1][:, region[0]])  # sample 0's partner is sample 1
    assert torch.equal(p2[0][region[0]], pseudo[1][region[0]]) and torch.equal(p2[1], pseudo[1])


def test_compat_bn_restore_leaves_statistics_to_the_weak_forward():
    method = make("csl", variant="released")
    reference = copy.deepcopy(method)
    method.train()
    reference.train()
    batch = fake_batch(method)
    torch.manual_seed(5)
    method.training_step(batch, CTX)
    x = torch.cat([batch["labeled"]["image"], batch["unlabeled"]["image_w"]])
    torch.manual_seed(5)  # the same feature dropout in the FP stream
    with torch.no_grad():
        reference.model(x, perturb=append_dropped_copy)  # the weak forward only
    for (name, a), b in zip(method.model.named_buffers(), reference.model.buffers()):
        assert torch.equal(a, b), name


def test_explain_shows_weights_and_clusters_without_changing_state():
    method = make("csl")
    method.train()
    batch = fake_batch(method)
    batch["unlabeled"]["cover"][0] = True  # sample 0's second view is a TMP view
    before = {k: v.clone() for k, v in method.state_dict().items()}
    panels = method.explain(batch, CTX)
    assert [p.kind for p in panels] == ["image", "labels", "scalar_map", "scalar_map", "mask", "scatter", "image"]
    weights = panels[3].data
    assert weights.min() >= 0 and weights.max() <= 1
    assert panels[5].data.shape[1] == 3 and set(panels[5].data[:, 2].tolist()) <= {0.0, 1.0}
    for key, value in method.state_dict().items():
        assert torch.equal(value, before[key]), key
