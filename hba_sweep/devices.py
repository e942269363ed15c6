"""Device selection shared by training, inference and the analysis."""

from __future__ import annotations

import torch

from hba_sweep.errors import ConfigError


def resolve_device(name: str | int | bool | None) -> torch.device:
    """auto | cpu | cuda[:N]; the study's ``cuda`` key (-1: cpu, N: cuda:N) is accepted."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(name, bool):
        name = "cuda" if name else "cpu"
    elif isinstance(name, int):
        name = "cpu" if name < 0 else f"cuda:{name}"
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r}: CUDA is not available on this machine. Fix: use device: cpu or auto.")
    return torch.device(str(name))
