"""What a network can return besides logits (docs/method_interface.md: network outputs).

`net(x)` returns the logits at the input resolution. `net(x, outputs=("logits", "representation"))`
returns a dict with exactly the requested names:

- `logits`: class scores at the input resolution (bilinear, align_corners=True);
- `features`: the classifier's input, at the decoder's resolution;
- `representation`: the projection head's embedding (model.heads.representation > 0), at the decoder's
  resolution (stride 4 for DeepLabV3+);
- `variance`: the per-pixel variance σ² ≥ 0, one channel, at the input resolution (model.heads.variance);
- `auxiliary`: the auxiliary head's class scores at the input resolution (model.heads.auxiliary).

`perturb` (a function of the list of encoder features) runs the decoder on perturbed features;
it may change the batch size and every decoder-side output follows it (`auxiliary` reads the
unperturbed encoder map).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

import torch

from ..errors import SemisegError

FeaturePerturbation = Callable[[List[torch.Tensor]], List[torch.Tensor]]
OUTPUT_NAMES = ("logits", "features", "representation", "variance", "auxiliary")


def check_requested(outputs: Sequence[str], available: Sequence[str], network: str) -> None:
    """One line naming an output this network cannot give, and how to switch it on."""
    for name in outputs:
        if name not in available:
            hint = f"; switch it on with model.heads.{name}" if name in OUTPUT_NAMES[2:] else ""
            raise SemisegError(f"the {network} network has no output '{name}' (it has: {', '.join(available)}){hint}")


def pick(outputs: Optional[Sequence[str]], compute: Dict[str, Callable[[], torch.Tensor]], network: str):
    """The logits when `outputs` is None, else {name: compute[name]()} for the requested names."""
    if outputs is None:
        return compute["logits"]()
    if isinstance(outputs, str):
        outputs = (outputs,)
    check_requested(outputs, list(compute), network)
    return {name: compute[name]() for name in outputs}
