"""Mixed precision (`train.amp`): autocast around the networks' forwards, fp32 everywhere else.

Losses and softmax statistics are computed in fp32 by the components
(`logits.float()`, methods.md §0.12), so autocast only changes the network
forwards. fp16 needs a GradScaler (its gradients underflow); bf16 does not.
"""

from __future__ import annotations

import contextlib

import torch

from ..errors import SemisegError

AMP_MODES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _cuda_grad_scaler():
    if hasattr(torch.amp, "GradScaler"):  # torch >= 2.3
        return torch.amp.GradScaler("cuda")
    return torch.cuda.amp.GradScaler()


class Precision:
    def __init__(self, amp: str, device: torch.device):
        if amp not in AMP_MODES:
            raise SemisegError(f"invalid value for 'train.amp': '{amp}' (use off, bf16 or fp16)")
        if amp == "fp16" and device.type != "cuda":
            raise SemisegError("train.amp=fp16 needs a CUDA GPU; use train.amp=bf16 on CPU (or off)")
        self.mode = amp
        self.dtype = AMP_MODES[amp]
        self.device_type = device.type
        self.scaler = _cuda_grad_scaler() if amp == "fp16" else None

    def autocast(self):
        """The context for forwards (training step and evaluation)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer) -> None:
        """optimizer.step(), through the scaler for fp16 (which skips steps with inf/NaN gradients)."""
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)
            self.scaler.update()

    def state_dict(self) -> dict | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)

    def wrap_forward(self, forward):
        """`forward` run under autocast, returning fp32 scores (evaluation takes softmax/argmax of them)."""
        if self.dtype is None:
            return forward

        def run(images):
            with self.autocast():
                return forward(images).float()

        return run
