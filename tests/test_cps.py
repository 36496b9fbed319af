"""CPS and CPS+CutMix (docs/methods/cps.md) against hand computations; the CutMix partner is never the
sample itself."""

import pytest
import torch

from semiseg.methods.interface import StepContext
from semiseg.components.losses import masked_ce, supervised_ce
from test_methods import fake_batch, make


def _ce_both(method, x_l, y_l):
    return supervised_ce(method.model(x_l), y_l) + supervised_ce(method.model2(x_l), y_l)


def test_branches_share_the_encoder_and_differ_in_the_head():
    method = make("cps")
    enc1, enc2 = method.model.encoder.state_dict(), method.model2.encoder.state_dict()
    assert all(torch.equal(enc1[k], enc2[k]) for k in enc1)
    head1, head2 = dict(method.model.decoder.named_parameters()), dict(method.model2.decoder.named_parameters())
    conv = "classifier.weight"
    assert not torch.equal(head1[conv], head2[conv])
    assert head1[conv].data_ptr() != head2[conv].data_ptr()
    # Kaiming-normal fan_in: std = √(2 / fan_in)
    fan_in = head1["fuse.0.0.weight"][0].numel()
    assert head1["fuse.0.0.weight"].std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.1)
    # branch 1 predicts
    method.eval()
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(method.predict(x), method.model(x))


def test_cutmix_loss_crosses_mixed_pseudo_labels_from_the_partner():
    method = make("cps")
    method.eval()
    batch = fake_batch(method)
    x_l, y_l = batch["labeled"]["image"], batch["labeled"]["mask"]
    x_u, v = batch["unlabeled"]["image_w"], batch["unlabeled"]["valid"]
    b, _, h, w = x_u.shape
    with torch.no_grad():
        loss, _ = method.training_step(batch, StepContext.at(0.0))
        m = batch["unlabeled"]["box"][:, 0]  # the toggled-box masks the data pipeline drew
        assert m.any() and batch["unlabeled"]["box"].shape == (b, 1, h, w)
        partner = [(i + 1) % b for i in range(b)]  # never i itself
        x_m = torch.where(m[:, None], x_u[partner], x_u)
        v_m = torch.where(m, v[partner], v)
        y1, y2 = method.model(x_u).argmax(1), method.model2(x_u).argmax(1)
        t1, t2 = torch.where(m, y1[partner], y1), torch.where(m, y2[partner], y2)
        ones = torch.ones_like(v_m, dtype=torch.float)
        cps = masked_ce(method.model(x_m), t2, ones, v_m) + masked_ce(method.model2(x_m), t1, ones, v_m)
        expected = _ce_both(method, x_l, y_l) + 1.0 * cps  # λ = 1 (VOC CPS+CutMix)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_plain_cps_supervises_labeled_and_unlabeled_pixels():
    method = make("cps")
    method.params.cutmix = False
    method.eval()
    batch = fake_batch(method)
    x_l, y_l = batch["labeled"]["image"], batch["labeled"]["mask"]
    x_u, v = batch["unlabeled"]["image_w"], batch["unlabeled"]["valid"]
    with torch.no_grad():
        loss, _ = method.training_step(batch, StepContext.at(0.0))
        x = torch.cat([x_l, x_u])
        z1, z2 = method.model(x), method.model2(x)
        valid = torch.cat([y_l != 255, v])  # padding (255 rows, invalid columns) never counts
        ones = torch.ones_like(valid, dtype=torch.float)
        cps = masked_ce(z1, z2.argmax(1), ones, valid) + masked_ce(z2, z1.argmax(1), ones, valid)
        expected = _ce_both(method, x_l, y_l) + 1.5 * cps  # λ = 1.5 (VOC CPS)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_loss_weight_defaults_and_override():
    method = make("cps")
    assert method.cps_weight == 1.0
    method.params.cutmix = False
    assert method.cps_weight == 1.5
    method.params.cps_weight = 6.0
    assert method.cps_weight == 6.0
