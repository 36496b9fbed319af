"""UniMatch V1 (docs/methods/unimatch.md) against a hand computation: the CutMix partner is another image
of the batch, and its pseudo-labels come from the same weak forward (one pseudo-label source)."""

import pytest
import torch
import torch.nn.functional as F

from semiseg.methods.interface import StepContext
from semiseg.components.losses import masked_ce, supervised_ce
from test_methods import fake_batch, make


def _decode(model, low, high, size):
    return F.interpolate(model.decoder(low, high), size=size, mode="bilinear", align_corners=True)


def test_loss_by_hand_with_fp_stream_and_two_strong_views():
    method = make("unimatch")
    method.eval()  # BN eval: the doubled-batch decoder equals separate decodes
    tau = 0.25
    method.params.threshold = tau
    batch = fake_batch(method)
    x_l, y_l = batch["labeled"]["image"], batch["labeled"]["mask"]
    u = batch["unlabeled"]
    x_w, v, x_s, boxes = u["image_w"], u["valid"], u["image_s"], u["box"]
    b = len(x_w)
    partner = [(i + 1) % b for i in range(b)]  # another image of the batch
    with torch.no_grad():
        torch.manual_seed(3)
        loss, logs = method.training_step(batch, StepContext.at(0.0))
        feats = method.model.encoder(torch.cat([x_l, x_w]))
        low, high = feats[method.model.encoder.low_index], feats[-1]
        torch.manual_seed(3)  # the FP stream's Dropout2d draws: low level first, then high
        low_fp, high_fp = F.dropout2d(low, 0.5, True), F.dropout2d(high, 0.5, True)
        size = x_w.shape[-2:]
        clean = _decode(method.model, low, high, size)
        z_fp = _decode(method.model, low_fp, high_fp, size)[len(x_l):]
        z_w = clean[len(x_l):]
        prob = z_w.softmax(1)
        conf, pseudo = prob.max(1)
        assert 0 < (conf >= tau).float().mean() < 1  # the threshold matters in this test
        loss_s = []
        for k in range(2):
            m = boxes[:, k]
            x_mix = torch.where(m[:, None], x_s[partner, k], x_s[:, k])
            target = torch.where(m, pseudo[partner], pseudo)  # the partner's labels of the same forward
            sel = torch.where(m, conf[partner], conf) >= tau
            loss_s.append(masked_ce(method.model(x_mix), target, sel.float(), torch.where(m, v[partner], v)))
        loss_fp = masked_ce(z_fp, pseudo, (conf >= tau).float(), v)
        loss_x = supervised_ce(clean[: len(x_l)], y_l)
        expected = (loss_x + 0.25 * loss_s[0] + 0.25 * loss_s[1] + 0.5 * loss_fp) / 2
    assert loss_fp != masked_ce(z_w, pseudo, (conf >= tau).float(), v)  # the FP stream is perturbed
    assert logs["loss_fp"].item() == pytest.approx(loss_fp.item(), rel=1e-5)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert logs["mask_ratio"].item() == pytest.approx(((conf >= tau).float() * v).sum().item() / v.sum().item())


def test_cityscapes_ohem_supervised_loss_is_used():
    method = make("unimatch")
    method.params.supervised_loss = "ohem"
    method.params.ohem_min_kept_per_image = 10
    method.params.threshold = 0.0
    method.eval()
    batch = fake_batch(method)
    with torch.no_grad():
        torch.manual_seed(0)
        _, logs = method.training_step(batch, StepContext.at(0.0))
        plain = supervised_ce(method.model(batch["labeled"]["image"]), batch["labeled"]["mask"])
    # OHEM keeps the hard pixels only (P ≤ 0.7 on a random net: nearly all, but never the easy ones)
    from semiseg.components.losses import ohem_ce
    with torch.no_grad():
        expected = ohem_ce(method.model(batch["labeled"]["image"]), batch["labeled"]["mask"], 0.7, 10 * 2)
    assert logs["loss_x"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert expected.item() >= plain.item() - 1e-6
