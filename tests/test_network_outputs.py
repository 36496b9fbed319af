"""Network outputs (models/outputs.py) of DeepLabV3+ and DPT and the extra heads (models/heads.py).

Checks, on tiny random-init networks built through `build_model`: `net(x)` is the logits; the
`outputs=` dict holds exactly the requested names with the documented shapes (representation and
features at stride 4, variance ≥ 0 and auxiliary at the input size); asking for a head that is off
or for an unknown output raises one SemisegError line; a batch-doubling `perturb` doubles every
decoder-side output; the heads sit in the head parameter group; switching heads on leaves the
logits of the same weights unchanged; `features` through the classifier is the logits; DPT gives
logits/features and refuses the extra heads; the model registry names its valid entries.
"""

import pytest
import torch
import torch.nn.functional as F

from semiseg.config import load_config
from semiseg.errors import SemisegError
from semiseg.methods import MethodParams
from semiseg.methods.supervised import Supervised
from semiseg.models import build_model
from semiseg.models.dpt import DPTSegmenter
from semiseg.registry import MODELS

C = 5
DECODER = 8
REPRESENTATION = 16
TINY = ["train.total_iters=1", "model.encoder=resnet18", "model.pretrained=none", "model.aspp_channels=8",
        f"model.decoder_channels={DECODER}", "model.low_level_channels=8"]
HEADS = [f"model.heads.representation={REPRESENTATION}", "model.heads.variance=true", "model.heads.auxiliary=true"]
B, H, W = 2, 64, 48


def tiny_net(*overrides, seed=0):
    torch.manual_seed(seed)
    cfg = load_config(None, TINY + list(overrides))
    return build_model(cfg.model, C)


@pytest.fixture(scope="module")
def plain():
    return tiny_net().eval()


@pytest.fixture(scope="module")
def headed():
    return tiny_net(*HEADS).eval()


@pytest.fixture(scope="module")
def x():
    return torch.randn(B, 3, H, W, generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def test_plain_call_is_the_logits_output(plain, x):
    logits = plain(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (B, C, H, W)
    out = plain(x, outputs=("logits",))
    assert set(out) == {"logits"}
    assert torch.equal(out["logits"], logits)
    assert torch.equal(plain(x, outputs="logits")["logits"], logits)  # a single name as a string


@torch.no_grad()
def test_every_output_has_its_documented_shape(headed, x):
    names = ("logits", "features", "representation", "variance", "auxiliary")
    out = headed(x, outputs=names)
    assert set(out) == set(names)
    assert out["logits"].shape == (B, C, H, W)
    assert out["features"].shape == (B, DECODER, H // 4, W // 4)
    assert out["representation"].shape == (B, REPRESENTATION, H // 4, W // 4)
    assert out["variance"].shape == (B, 1, H, W)
    assert (out["variance"] >= 0).all()
    assert out["auxiliary"].shape == (B, C, H, W)
    # only what was asked for
    assert set(headed(x, outputs=("variance",))) == {"variance"}


@pytest.mark.parametrize("name", ["representation", "variance", "auxiliary"])
def test_a_head_that_is_off_names_its_switch(plain, x, name):
    with pytest.raises(SemisegError) as info:
        plain(x, outputs=("logits", name))
    message = str(info.value)
    assert f"model.heads.{name}" in message and f"'{name}'" in message
    assert len(message.splitlines()) == 1


def test_an_unknown_output_raises(headed, x):
    with pytest.raises(SemisegError, match="no output 'probabilities'") as info:
        headed(x, outputs=("logits", "probabilities"))
    assert "model.heads" not in str(info.value)  # not a head: no switch to suggest
    assert "logits" in str(info.value)  # lists what the network has


@torch.no_grad()
def test_batch_doubling_perturbation_doubles_every_decoder_output(headed, x):
    seen = []

    def double(levels):
        seen.append(len(levels))
        return [torch.cat([f, f]) for f in levels]

    names = ("logits", "features", "representation", "variance", "auxiliary")
    out = headed(x, perturb=double, outputs=names)
    clean = headed(x, outputs=names)
    assert seen == [2]  # DeepLabV3+ perturbs [low, high]
    for name in ("logits", "features", "representation", "variance"):
        assert out[name].shape[0] == 2 * B, name
        assert out[name].shape[1:] == clean[name].shape[1:], name
        # the doubled batch is the clean batch twice (eval mode: no dropout, fixed BN statistics)
        torch.testing.assert_close(out[name][:B], clean[name], msg=name)
        torch.testing.assert_close(out[name][B:], clean[name], msg=name)
    # the auxiliary head reads the unperturbed encoder map
    assert torch.equal(out["auxiliary"], clean["auxiliary"])
    # the plain call follows the perturbation too
    assert headed(x, perturb=double).shape == (2 * B, C, H, W)


def test_heads_are_in_the_head_parameter_group(headed):
    method = Supervised(headed, MethodParams())
    backbone, head = method.param_groups(0.01, 10.0)
    assert backbone["name"] == "backbone" and head["name"] == "head"
    assert head["lr"] == pytest.approx(0.1) and backbone["lr"] == pytest.approx(0.01)
    backbone_ids = {id(p) for p in backbone["params"]}
    head_ids = {id(p) for p in head["params"]}
    for name in ("representation", "variance", "auxiliary"):
        params = list(headed.heads[name].parameters())
        assert params, name
        assert all(id(p) in head_ids for p in params), name
        assert not any(id(p) in backbone_ids for p in params), name
    assert backbone_ids == {id(p) for p in headed.encoder.parameters()}
    assert len(backbone_ids) + len(head_ids) == len(list(headed.parameters()))


@torch.no_grad()
def test_switching_heads_on_leaves_the_logits_alone(x):
    plain = tiny_net(seed=3)
    with_heads = tiny_net(*HEADS, seed=3)
    # scramble the plain network first so that the comparison depends on the load below
    for p in plain.parameters():
        p.add_(0.1)
    result = plain.load_state_dict(with_heads.state_dict(), strict=False)
    assert result.missing_keys == []
    assert result.unexpected_keys and all(k.startswith("heads.") for k in result.unexpected_keys)
    plain.eval(), with_heads.eval()
    assert torch.equal(plain(x), with_heads(x))
    assert torch.equal(with_heads(x, outputs=("logits", "variance"))["logits"], plain(x))


@torch.no_grad()
def test_features_through_the_classifier_are_the_logits(headed, x):
    out = headed(x, outputs=("logits", "features"))
    logits = F.interpolate(headed.decoder.classifier(out["features"]), size=(H, W), mode="bilinear",
                           align_corners=True)
    torch.testing.assert_close(logits, out["logits"], rtol=0, atol=1e-6)


@torch.no_grad()
def test_dpt_gives_logits_and_features():
    torch.manual_seed(0)
    net = DPTSegmenter("vit_small_patch14_dinov2", C, embed_dim=24, depth=4, num_heads=2).eval()
    x = torch.randn(2, 3, 28, 42)
    out = net(x, outputs=("logits", "features"))
    assert set(out) == {"logits", "features"}
    assert torch.equal(out["logits"], net(x))
    assert out["logits"].shape == (2, C, 28, 42)
    # the fused path: the x4 level (4 * H/14) upsampled x2
    assert out["features"].shape[0] == 2 and out["features"].shape[-2:] == (8 * 2, 8 * 3)
    logits = F.interpolate(net.decoder.output(out["features"]), size=(28, 42), mode="bilinear", align_corners=True)
    torch.testing.assert_close(logits, out["logits"], rtol=0, atol=1e-6)
    with pytest.raises(SemisegError, match="model.heads.variance"):
        net(x, outputs=("variance",))


@pytest.mark.parametrize("head", ["model.heads.variance=true", "model.heads.representation=8",
                                  "model.heads.auxiliary=true"])
def test_dpt_refuses_the_extra_heads(head):
    cfg = load_config(None, ["train.total_iters=1", "model.name=dpt", "model.encoder=vit_small_patch14_dinov2",
                             "model.pretrained=none", head])
    with pytest.raises(SemisegError) as info:
        build_model(cfg.model, C)
    message = str(info.value)
    name = head.split("=")[0]
    assert len(message.splitlines()) == 1 and name in message and "dpt" in message


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(SemisegError) as info:
        MODELS.get("unet")
    message = str(info.value)
    assert "unknown model 'unet'" in message and "deeplabv3plus, dpt" in message
    assert MODELS.names() == ["deeplabv3plus", "dpt"]
