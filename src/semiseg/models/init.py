"""Weight initialisation helpers."""

from __future__ import annotations

from torch import nn

_CONVS = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
_NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm)


def kaiming_init_head(model: nn.Module) -> None:
    """Re-draw the head (everything outside the encoder) as CPS does: conv weights Kaiming-normal
    (fan_in, ReLU gain), norm layers weight 1 and bias 0 (docs/methods/cps.md). Biases of convs are
    left as they are, like the released `init_weight`. Draws from torch's global RNG."""
    head = {id(p) for p in model.head_parameters()}
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if not own or not all(id(p) in head for p in own):
            continue
        if isinstance(module, _CONVS):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        elif isinstance(module, _NORMS):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
