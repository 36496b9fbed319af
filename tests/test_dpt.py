"""The DPT head on a timm DINOv2 ViT (docs/methods/unimatch_v2.md), on tiny random-init ViTs (nothing downloads)."""

import pytest
import torch

from semiseg.config import load_config
from semiseg.errors import SemisegError
from semiseg.models import build_model
from semiseg.models.dpt import DPTSegmenter, default_head, default_layers

VIT = "vit_small_patch14_dinov2"
TINY = dict(embed_dim=24, depth=4, num_heads=2)


def tiny_dpt(num_classes=5):
    torch.manual_seed(0)
    return DPTSegmenter(VIT, num_classes, **TINY)


def test_v2_sizes_for_the_released_encoders():
    assert default_layers(12) == (2, 5, 8, 11)
    assert default_layers(24) == (4, 11, 17, 23)
    assert default_layers(40) == (9, 19, 29, 39)
    assert default_head(384) == (64, (48, 96, 192, 384))
    assert default_head(768) == (128, (96, 192, 384, 768))
    assert default_head(1024) == (256, (256, 512, 1024, 1024))
    assert default_head(1536) == (384, (1536,) * 4)
    assert default_layers(4) == (0, 1, 2, 3)


def test_intermediate_features_and_level_resolutions():
    model = tiny_dpt()
    x = torch.randn(2, 3, 56, 42)
    feats = model.encoder(x)
    assert [tuple(f.shape) for f in feats] == [(2, 24, 4, 3)] * 4  # (D, H/14, W/14), class token dropped
    head = model.decoder
    levels = [r(p(f)) for f, p, r in zip(feats, head.projects, head.resize)]
    assert [tuple(v.shape[-2:]) for v in levels] == [(16, 12), (8, 6), (4, 3), (2, 2)]  # x4, x2, x1, x½
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert model(x).shape == (2, 5, 56, 42)


def test_intermediates_are_final_norm_outputs_of_the_chosen_blocks():
    model = tiny_dpt()
    model.eval()
    x = torch.randn(1, 3, 28, 28)
    body = model.encoder.body
    with torch.no_grad():
        tokens = body.norm_pre(body._pos_embed(body.patch_embed(x)))
        expected = []
        for i, block in enumerate(body.blocks):
            tokens = block(tokens)
            if i in model.encoder.layers:
                patch = body.norm(tokens)[:, body.num_prefix_tokens:]
                expected.append(patch.transpose(1, 2).reshape(1, 24, 2, 2))
        got = model.encoder(x)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, expected))


def test_perturbation_hook_sees_the_four_features():
    model = tiny_dpt()
    seen = []

    def perturb(feats):
        seen.append([f.shape for f in feats])
        return [torch.zeros_like(f) for f in feats]

    x = torch.randn(2, 3, 28, 28)
    out = model(x, perturb=perturb)
    assert len(seen[0]) == 4
    # zeroed features: both samples give the same logits
    assert torch.allclose(out[0], out[1])


def test_sides_must_be_multiples_of_14():
    with pytest.raises(SemisegError, match="multiples of 14"):
        tiny_dpt()(torch.randn(1, 3, 30, 28))


def test_build_model_switch_and_lock_backbone():
    cfg = load_config(None, ["train.total_iters=1", "model.name=dpt", f"model.encoder={VIT}",
                             "model.lock_backbone=true"])
    model = build_model(cfg.model, 3)
    assert isinstance(model, DPTSegmenter) and model.encoder.layers == (2, 5, 8, 11)
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.decoder.parameters())
    bad = load_config(None, ["train.total_iters=1", "model.name=unet"])
    with pytest.raises(SemisegError, match="unknown model 'unet'.*deeplabv3plus, dpt"):
        build_model(bad.model, 3)
    cnn = load_config(None, ["train.total_iters=1", "model.name=dpt", "model.encoder=resnet18"])
    with pytest.raises(SemisegError, match="ViT"):
        build_model(cnn.model, 3)


def test_encoder_weights_load_from_a_local_timm_file(tmp_path):
    from semiseg.models.weights import load_pretrained

    source = tiny_dpt()
    path = tmp_path / "vit.pth"
    torch.save(source.encoder.body.state_dict(), path)
    torch.manual_seed(1)
    target = DPTSegmenter(VIT, 5, **TINY)
    assert not torch.equal(target.encoder.body.pos_embed, source.encoder.body.pos_embed)
    load_pretrained(target.encoder, str(path))
    for k, v in source.encoder.body.state_dict().items():
        assert torch.equal(v, target.encoder.body.state_dict()[k]), k
