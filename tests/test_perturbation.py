"""Feature perturbations: UniMatch V1's FP dropout and V2's complementary channel dropout
(docs/methods/unimatch.md, docs/methods/unimatch_v2.md)."""

import torch

from semiseg.components.perturbation import (append_dropped_copy, complementary_channel_dropout,
                                             complementary_channel_masks, unperturbed_pairs)


def test_fp_appends_a_channel_dropped_copy():
    torch.manual_seed(0)
    f = torch.rand(3, 64, 4, 4) + 0.1
    (out,) = append_dropped_copy([f])
    assert out.shape == (6, 64, 4, 4)
    assert torch.equal(out[:3], f)
    dropped = out[3:]
    per_channel_zero = (dropped == 0).all(dim=(2, 3))
    per_channel_scaled = torch.isclose(dropped, 2 * f).all(dim=(2, 3))
    assert (per_channel_zero | per_channel_scaled).all()  # whole channels: zeroed or scaled by 2
    assert 0.3 < per_channel_zero.float().mean() < 0.7
    # independently per sample
    assert not torch.equal(per_channel_zero[0], per_channel_zero[1])


def test_fp_applies_to_every_level():
    low, high = torch.ones(2, 4, 8, 8), torch.ones(2, 16, 2, 2)
    out = append_dropped_copy([low, high])
    assert [o.shape[0] for o in out] == [4, 4]


def test_unperturbed_pairs_count():
    torch.manual_seed(0)
    for n in (1, 2, 5, 8):
        assert int(unperturbed_pairs(n).sum()) == n // 2


def test_complementary_masks():
    torch.manual_seed(0)
    keep = torch.tensor([False, True, False, False])
    masks = complementary_channel_masks(keep, 32)
    m1, m2 = masks[:4], masks[4:]
    assert torch.equal(m1 + m2, torch.full_like(m1, 2.0))
    assert set(m1[~keep].unique().tolist()) == {0.0, 2.0}
    assert (m1[keep] == 1).all() and (m2[keep] == 1).all()


def test_complementary_dropout_same_mask_on_every_vit_level():
    torch.manual_seed(1)
    n, d = 4, 16
    feats = [torch.ones(2 * n, d, 3, 3) * (i + 1) for i in range(4)]
    out = complementary_channel_dropout(feats)
    masks = [o[:, :, 0, 0] / (i + 1) for i, o in enumerate(out)]
    assert all(torch.equal(masks[0], m) for m in masks)  # one mask for all four levels
    assert (out[0] == out[0][:, :, :1, :1]).all()  # broadcast over positions
    m1, m2 = masks[0][:n], masks[0][n:]
    assert torch.equal(m1 + m2, torch.full_like(m1, 2.0))  # view 2 keeps what view 1 drops
    untouched = (m1 == 1).all(1)
    assert int(untouched.sum()) == n // 2


def test_deeplab_hook_decodes_the_perturbed_features():
    from semiseg.models.deeplabv3plus import DeepLabV3Plus

    torch.manual_seed(0)
    model = DeepLabV3Plus("resnet18", 3, aspp_channels=8, decoder_channels=8, low_level_channels=8).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = model(x)
        doubled = model(x, perturb=lambda feats: [torch.cat([f, f]) for f in feats])
    assert doubled.shape == (4, 3, 32, 32)
    assert torch.allclose(doubled[:2], plain, atol=1e-5) and torch.allclose(doubled[2:], plain, atol=1e-5)
