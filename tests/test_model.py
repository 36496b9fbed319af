"""DeepLabV3+ on timm encoders and strict encoder-weight loading."""

import pytest
import timm
import torch

from semiseg.errors import SemisegError
from semiseg.models import DeepLabV3Plus
from semiseg.models.deeplabv3plus import ASPP_RATES
from semiseg.models.weights import bundled_lite0_state, load_pretrained


def tiny(encoder="resnet18", os_=16, classes=5):
    return DeepLabV3Plus(encoder, classes, os_, aspp_channels=8, decoder_channels=8, low_level_channels=8)


@pytest.mark.parametrize("os_", [8, 16])
def test_logits_at_input_resolution_and_aspp_rates(os_):
    model = tiny(os_=os_).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 45, 61))
    assert out.shape == (1, 5, 45, 61)
    dilations = [branch[0].dilation[0] for branch in model.decoder.aspp.branches[1:4]]
    assert tuple(dilations) == ASPP_RATES[os_] == ((12, 24, 36) if os_ == 8 else (6, 12, 18))
    # the high-level map really has the requested stride
    feats = model.encoder(torch.randn(1, 3, 64, 64))
    low, high = feats[model.encoder.low_index], feats[-1]
    assert low.shape[-1] == 16 and high.shape[-1] == 64 // os_


def test_backbone_and_head_parameters_partition_the_model():
    model = tiny()
    ids_b = {id(p) for p in model.backbone_parameters()}
    ids_h = {id(p) for p in model.head_parameters()}
    assert not ids_b & ids_h and len(ids_b) + len(ids_h) == len(list(model.parameters()))


def test_bundled_lite0_weights_are_imagenet_weights():
    state = bundled_lite0_state()
    full = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    full.load_state_dict(state, strict=True)  # every tensor placed by name and shape
    assert state["classifier.weight"].shape == (1000, 1280)
    # trained BN statistics, not the initial ones
    assert not torch.allclose(state["bn1.running_var"], torch.ones_like(state["bn1.running_var"]))
    model = tiny("tf_efficientnet_lite0")
    load_pretrained(model.encoder, "imagenet")
    assert torch.equal(model.encoder.body.state_dict()["conv_stem.weight"], state["conv_stem.weight"])


def test_local_weights_file_round_trip_and_strictness(tmp_path):
    source = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    model = tiny("resnet18")
    load_pretrained(model.encoder, str(path))
    assert torch.equal(model.encoder.body.state_dict()["conv1.weight"], source.state_dict()["conv1.weight"])
    # weights of a deeper network never load silently into a shallower one
    deeper = tmp_path / "r34.pth"
    torch.save(timm.create_model("resnet34", pretrained=False).state_dict(), deeper)
    with pytest.raises(SemisegError, match="r34.pth"):
        load_pretrained(tiny("resnet18").encoder, str(deeper))
    with pytest.raises(SemisegError, match="not found"):
        load_pretrained(model.encoder, str(tmp_path / "missing.pth"))
    with pytest.raises(SemisegError, match="only tf_efficientnet_lite0"):
        load_pretrained(model.encoder, "imagenet")


def test_unknown_encoder_lists_close_names():
    with pytest.raises(SemisegError, match="unknown encoder 'resnet19'.*did you mean"):
        tiny("resnet19")


def fake_create_model(monkeypatch, calls, fail):
    """timm.create_model as the weights module sees it: records calls; `pretrained=True` fails or builds offline."""
    import semiseg.models.weights as weights

    real = timm.create_model

    def create_model(name, pretrained=False, **kwargs):
        calls.append((name, pretrained))
        if pretrained and fail:
            raise OSError("offline\nsecond line of the hub's message")
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(weights.timm, "create_model", create_model)


def test_timm_weights_reach_the_download_even_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a cached copy must still load: no refusal up front
    encoder = tiny("resnet18").encoder
    calls = []
    fake_create_model(monkeypatch, calls, fail=True)
    with pytest.raises(SemisegError) as info:
        load_pretrained(encoder, "timm:in1k")
    assert calls == [("resnet18.in1k", True)]
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    for fragment in ("model.pretrained=timm:in1k", "resnet18.in1k", "OSError: offline", "local file"):
        assert fragment in message, (fragment, message)


def test_timm_weights_load_when_timm_has_them(monkeypatch):
    encoder = tiny("resnet18").encoder
    calls, created = [], []
    fake_create_model(monkeypatch, calls, fail=False)
    import semiseg.models.weights as weights

    record = weights.timm.create_model
    monkeypatch.setattr(weights.timm, "create_model", lambda *a, **k: created.append(record(*a, **k)) or created[-1])
    before = encoder.body.state_dict()["conv1.weight"].clone()
    load_pretrained(encoder, "timm")
    assert calls == [("resnet18", True)]
    source = created[0].state_dict()["conv1.weight"]
    assert not torch.equal(before, source)
    assert torch.equal(encoder.body.state_dict()["conv1.weight"], source)
