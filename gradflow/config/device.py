"""The device a run trains on: `device=auto` is $GRADFLOW_DEVICE where set, else cuda, then mps, then cpu."""

from __future__ import annotations

import os
import re

from gradflow.errors import GradflowError


DEVICE_ENV = "GRADFLOW_DEVICE"  # what device=auto means on this machine, when set (cpu on a shared GPU box)
DEVICE_NAMES = "auto, cpu, cuda, cuda:N, mps"


def check_device_name(spec: str, option: str = "") -> None:
    """`spec` names a kind of device (auto, cpu, cuda, cuda:N, mps), whichever machine it is for."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", str(spec)):
        raise GradflowError(f"{option + ' ' if option else 'device='}{spec!r} is not allowed; choices: {DEVICE_NAMES}")


def resolve_device(spec: str, option: str = ""):
    """auto -> $GRADFLOW_DEVICE if set, else cuda, then mps, then cpu; an explicit device must exist
    on this machine. `option`: the command-line option that gave `spec` (bench's --device), as errors
    name it; else the config key device=."""
    check_device_name(spec, option)
    import torch

    def given(value: str) -> str:  # as the user wrote it
        return f"{option} {value}" if option else f"device={value}"

    preset = os.environ.get(DEVICE_ENV, "auto").strip() or "auto"
    if spec == "auto" and preset != "auto":
        try:
            return resolve_device(preset)
        except GradflowError:
            raise GradflowError(f"{DEVICE_ENV}={preset!r} (what device=auto means here) names no device of this "
                                f"machine; choices: {DEVICE_NAMES} (where present)") from None
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", spec):
        if not torch.cuda.is_available():
            raise GradflowError(f"{given(repr(spec))} but CUDA is not available on this machine; use "
                                f"{given('auto')} or {given('cpu')}")
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise GradflowError(f"{given(repr(spec))} but this machine has {torch.cuda.device_count()} CUDA device(s)")
        return torch.device(spec)
    if spec == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise GradflowError(f"{given(repr(spec))} but MPS is not available on this machine; use {given('auto')} "
                                f"or {given('cpu')}")
        return torch.device("mps")
    raise AssertionError(spec)  # (check_device_name let no other through)
