"""The one YAML + ``--set`` loader of the training and the inference config.

``load_yaml_config`` reads the file, resolves the relative paths it names next to it, puts the
``--set key=value`` overrides on top (an overridden key drops every spelling of it from the file),
hands the mapping to the config's own reader and prints that reader's notes (published keys with
no effect here) to stderr.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from hba_sweep.foundation.errors import ConfigError
from hba_sweep.foundation.yaml_io import read_yaml

T = TypeVar("T")
Reader = Callable[[dict[str, Any], str, list[str]], T]  # (mapping, source, notes) -> the config


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` from ``--set`` -> a dict; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected key=value. Fix: write e.g. --set epochs=6.")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def _relative(value: Any, base: Path, missing_too: bool) -> Any:
    """``value`` read next to ``base`` if it is a relative path there (or, ``missing_too``, found nowhere)."""
    if not isinstance(value, str) or not value or os.path.isabs(value):
        return value
    if (base / value).exists():
        return os.path.normpath(base / value) if missing_too else str(base / value)
    return os.path.normpath(base / value) if missing_too and not os.path.exists(value) else value


def resolve_relative(
    raw: Mapping[str, Any],
    base: Path,
    aliases: Mapping[str, str],
    inputs: Collection[str] = (),
    if_there: Collection[str] = (),
) -> dict[str, Any]:
    """Relative paths of a config file read next to it (keys in any spelling of ``aliases``; a value
    may be a path, a list of paths or a mapping name -> path).

    ``inputs``: a path found only from the working directory keeps that meaning, one found nowhere
    names the file's neighbour (so a problem is reported there). ``if_there``: only a path that exists
    next to the file is read there; any other keeps its meaning from the working directory.
    """
    out = dict(raw)
    for key, value in raw.items():
        name = aliases.get(key, key)
        if name not in inputs and name not in if_there:
            continue
        missing_too = name in inputs
        if isinstance(value, list):
            out[key] = [_relative(v, base, missing_too) for v in value]
        elif isinstance(value, dict):
            out[key] = {k: _relative(v, base, missing_too) for k, v in value.items()}
        else:
            out[key] = _relative(value, base, missing_too)
    return out


def load_yaml_config(
    path: str | os.PathLike | None,
    overrides: list[str] | Mapping[str, Any] | None,
    read: Reader[T],
    aliases: Mapping[str, str],
    inputs: Collection[str] = (),
    if_there: Collection[str] = (),
    path_defaults: Mapping[str, Any] | None = None,
) -> T:
    """A config from a YAML file (or none: ``<defaults>``) with ``--set`` overrides, read by ``read``.

    Relative paths of the file (and the reader's default paths ``path_defaults`` where the file sets
    none) are resolved as :func:`resolve_relative` says; overrides keep the working directory's
    meaning. ``read(mapping, source, notes)`` validates; what it appends to ``notes`` is printed to stderr.
    """
    raw: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        named = read_yaml(path)
        given = {aliases.get(k, k) for k in named}
        defaults = {k: v for k, v in (path_defaults or {}).items() if k not in given}
        raw = resolve_relative({**named, **defaults}, Path(path).parent, aliases, inputs, if_there)
        source = str(path)
    extra = parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides or {})
    if extra:
        source = f"{source} (with --set {', '.join(f'{k}={v}' for k, v in extra.items())})"
    overridden = {aliases.get(k, k) for k in extra}
    raw = {k: v for k, v in raw.items() if aliases.get(k, k) not in overridden}  # --set wins over any spelling
    notes: list[str] = []
    config = read({**raw, **extra}, source, notes)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return config
