"""Mixed precision (`train.amp`): autocast around every network's forward, fp32 everywhere else.

`attach` enters `torch.autocast` when one of the method's networks (its child modules: students,
teachers, second branches, discriminators; the members of a child ModuleList/ModuleDict) is
called and leaves it on the way out, casting the floating outputs back to fp32. The networks run in
bf16/fp16, while everything a method computes from their outputs (losses, softmax, entropy,
percentiles, queue similarities) runs in fp32 with no effort from the method. Why a forward
pre-/post-hook pair and not one `with torch.autocast()` in the engine: the engine calls
`training_step` once, and a context around it would also cast the method's own matmuls (e.g. a
contrastive loss) to half precision; the hooks put the context exactly around the network calls,
wherever in the step they happen. fp16 needs a GradScaler (its gradients underflow); bf16 does not.
The hooks survive `copy.deepcopy` (a teacher copied from a student later keeps them).

`auto` picks bf16 where the hardware computes it natively (a CUDA GPU with bf16, a CPU with the
AVX-512 BF16 or AMX-BF16 instructions) and fp32 elsewhere (docs/distributed.md: Mixed precision).
"""

from __future__ import annotations

import functools
import threading

import torch

from ..errors import SemisegError

AMP_MODES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16, "auto": None}
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The instruction-set flags of the CPU (Linux); empty where /proc/cpuinfo does not exist."""
    try:
        text = open(cpuinfo, encoding="utf-8", errors="replace").read()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def resolve_amp(amp: str, device: torch.device, flags: set[str] | None = None) -> tuple[str, str]:
    """(mode, reason): `auto` becomes bf16 on hardware with native bf16 arithmetic, else off."""
    if amp != "auto":
        return amp, f"train.amp={amp}"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "train.amp=auto: the GPU computes bf16"
        return "off", "train.amp=auto: the GPU has no bf16, fp32 (set fp16 to use its half precision)"
    if device.type == "cpu":
        have = sorted(set(NATIVE_BF16_CPU_FLAGS) & (cpu_flags() if flags is None else flags))
        if have:
            return "bf16", f"train.amp=auto: the CPU has {'/'.join(have)}"
        return "off", "train.amp=auto: the CPU has no native bf16 instructions, fp32"
    return "off", f"train.amp=auto: fp32 on {device.type}"


class _Nesting(threading.local):
    depth = 0
    context = None


_NESTING = _Nesting()


def _to_fp32(value):
    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype in (torch.bfloat16, torch.float16) else value
    if isinstance(value, dict):
        return {k: _to_fp32(v) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # namedtuple
        return type(value)(*(_to_fp32(v) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(_to_fp32(v) for v in value)
    return value


def _enter_autocast(device_type: str, dtype: torch.dtype, module, args):
    if _NESTING.depth == 0:
        _NESTING.context = torch.autocast(device_type=device_type, dtype=dtype)
        _NESTING.context.__enter__()
    _NESTING.depth += 1


def _leave_autocast(module, args, output):
    """Runs also when the forward raised (always_call), so autocast never stays on."""
    _NESTING.depth -= 1
    if _NESTING.depth > 0:
        return output
    context, _NESTING.context = _NESTING.context, None
    context.__exit__(None, None, None)
    return _to_fp32(output)


def _cuda_grad_scaler():
    if hasattr(torch.amp, "GradScaler"):  # torch >= 2.3
        return torch.amp.GradScaler("cuda")
    return torch.cuda.amp.GradScaler()


class Precision:
    def __init__(self, amp: str, device: torch.device):
        if amp not in AMP_MODES:
            raise SemisegError(f"invalid value for 'train.amp': '{amp}' (use off, bf16, fp16 or auto)")
        amp, self.reason = resolve_amp(amp, device)
        if amp == "fp16" and device.type != "cuda":
            raise SemisegError("train.amp=fp16 needs a CUDA GPU; use train.amp=bf16 on CPU (or off)")
        self.mode = amp
        self.dtype = AMP_MODES[amp]
        self.device_type = device.type
        self.scaler = _cuda_grad_scaler() if amp == "fp16" else None

    def attach(self, method: torch.nn.Module) -> None:
        """Autocast every network forward of `method` (a no-op for amp=off)."""
        if self.dtype is None:
            return
        enter = functools.partial(_enter_autocast, self.device_type, self.dtype)
        for network in networks_of(method):
            network.register_forward_pre_hook(enter)
            network.register_forward_hook(_leave_autocast, always_call=True)


    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer) -> None:
        """optimizer.step(), through the scaler for fp16 (which skips steps with inf/NaN gradients)."""
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)

    def end_step(self) -> None:
        """After every optimiser of the step: the fp16 scaler adapts its scale once per step."""
        if self.scaler is not None:
            self.scaler.update()

    def state_dict(self) -> dict | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def networks_of(method: torch.nn.Module):
    """The method's child modules, with the members of a child ModuleList / ModuleDict in its place."""
    for child in method.children():
        if isinstance(child, (torch.nn.ModuleList, torch.nn.ModuleDict)):
            yield from child.children()
        else:
            yield child
