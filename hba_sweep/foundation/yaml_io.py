"""Reading a YAML mapping with clear errors (configs, search-space bases, evaluation-set files)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from hba_sweep.foundation.errors import ConfigError, HBAError


def read_yaml(path: str | os.PathLike, error: type[HBAError] = ConfigError, what: str = "config file",
              missing_fix: str = "check the path (demo: python -m hba_sweep demo-data data/demo)") -> dict[str, Any]:
    """Read a YAML mapping, with clear errors for a missing file, bad syntax or a non-mapping."""
    p = Path(path)
    if not p.is_file():
        raise error(f"{p}: no such {what}. Fix: {missing_fix}.")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise error(f"{p}: not valid YAML ({exc}). Fix: correct the syntax.") from None
    if not isinstance(data, dict):
        raise error(f"{p}: expected a mapping of keys to values, got {type(data).__name__}. Fix: write key: value lines.")
    return data
