"""CPCL and DUEB as methods (docs/methods/cpcl.md, dueb.md)."""

import torch

from semiseg.components.collaborative_labels import collaborative_labels
from semiseg.components.losses import masked_ce
from semiseg.methods.interface import StepContext
from test_methods import fake_batch, make

CTX = StepContext.at(0.5)


def test_cpcl_losses_by_the_components():
    method = make("cpcl")
    method.eval()  # BN on running statistics: separate forwards give identical logits
    batch = fake_batch(method)
    with torch.no_grad():
        loss, logs = method.training_step(batch, CTX)
        x_m, t1, t2, valid = method.mixed_pair(batch["unlabeled"])
        labels = collaborative_labels(t1, t2, valid, method.num_classes)
        inter = masked_ce(method.model(x_m), labels.intersection, labels.beta_inter, valid)
        union = masked_ce(method.model2(x_m), labels.union, labels.beta_union, valid)
    assert torch.allclose(logs["loss_inter"], inter) and torch.allclose(logs["loss_union"], union)
    x_l, y_l = batch["labeled"]["image"], batch["labeled"]["mask"]
    with torch.no_grad():
        sup = method.supervised_loss(method.model(x_l), y_l) + method.supervised_loss(method.model2(x_l), y_l)
    assert torch.allclose(loss, sup + inter + union, atol=1e-6)


def test_dueb_without_its_terms_is_cpcl():
    dueb = make("dueb")
    dueb.params.use_energy = dueb.params.use_aleatoric = False
    cpcl = make("cpcl")
    cpcl.model.load_state_dict(dueb.model.state_dict(), strict=False)  # all but DUEB's variance heads
    cpcl.model2.load_state_dict(dueb.model2.state_dict(), strict=False)
    for method in (dueb, cpcl):
        method.eval()
    batch = fake_batch(cpcl)
    with torch.no_grad():
        assert torch.allclose(dueb.training_step(batch, CTX)[0], cpcl.training_step(batch, CTX)[0], atol=1e-6)


def test_variance_head_trains_by_default_and_is_frozen_when_released():
    for variant, trains in ((None, True), ("released", False), ("energy_only", False)):
        method = make("dueb", variant=variant)
        method.train()
        loss, _ = method.training_step(fake_batch(method), CTX)
        loss.backward()
        head = list(method.model.heads["variance"].parameters())
        assert all(p.requires_grad == trains for p in head), variant
        assert all((p.grad is not None) == trains for p in head), variant


def test_branch_one_predicts():
    method = make("dueb")
    method.eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(method.predict(x), method.model(x))


def test_explain_panels_leave_the_state_alone():
    for name, count in (("cpcl", 7), ("dueb", 8)):
        method = make(name)
        method.train()
        before = {k: v.clone() for k, v in method.state_dict().items()}
        panels = method.explain(fake_batch(method), CTX)
        assert len(panels) == count and panels[3].kind == "labels" and panels[5].kind == "scalar_map"
        for key, value in method.state_dict().items():
            assert torch.equal(value, before[key]), (name, key)
