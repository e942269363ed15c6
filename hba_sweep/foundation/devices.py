"""Device selection and the precision rule (bf16 autocast on CUDA when asked for), shared by
training, inference and the analysis."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch

from hba_sweep.foundation.errors import ConfigError


def published_device(value: Any) -> str:
    """The published ``cuda`` key: -1 all GPUs (here: ``cuda``, one GPU), 0 ``cuda:0``, 1 ``cuda:1``,
    any other value the CPU (as the config's own comment, ``2 for CPU``, and the original trainer)."""
    if isinstance(value, bool):
        return "cuda" if value else "cpu"
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            return value
    if isinstance(value, int):
        return {-1: "cuda", 0: "cuda:0", 1: "cuda:1"}.get(value, "cpu")
    return str(value)


def resolve_device(
    name: str | int | bool | None, fallback: bool = False, log: Callable[[str], None] | None = None
) -> torch.device:
    """auto | cpu | cuda[:N], or the published ``cuda`` key (an int: -1 all GPUs -> cuda, 0/1 -> cuda:0/1,
    other -> cpu). With ``fallback`` (always for the published int form) a CUDA device on a machine
    without one becomes the CPU with one log line, as the published code does; otherwise it is an error."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(name, (bool, int)):
        name, fallback = published_device(name), True
    index = str(name).partition(":")[2]
    missing = not torch.cuda.is_available() or (index.isdigit() and int(index) >= torch.cuda.device_count())
    if str(name).startswith("cuda") and missing:
        if not fallback:
            raise ConfigError(f"device={name!r}: this machine has no such CUDA device. Fix: use device: cpu or auto.")
        (log or (lambda m: print(m, file=sys.stderr, flush=True)))(
            f"{name} requested (published cuda key) but this machine has no such GPU: running on the CPU"
        )
        return torch.device("cpu")
    return torch.device(str(name))


def precision_used(device: torch.device, precision: str) -> str:
    """The one precision rule: ``bf16`` when asked for (``precision: bf16``, or ``auto``) on CUDA;
    ``fp32`` otherwise (published)."""
    return "bf16" if device.type == "cuda" and precision in ("auto", "bf16") else "fp32"


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """bf16 autocast when :func:`precision_used` is bf16; plain fp32 otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision_used(device, precision) == "bf16")
