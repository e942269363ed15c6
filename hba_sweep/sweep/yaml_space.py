"""Search spaces as YAML data (``search_spaces/*.yaml``): read with YAML's safe loader, nothing is executed.

:func:`parse` turns the file into an object carrying the names of a Python search-space file
(``NAME``, ``BASE_CONFIG``, ``PARAM_SPACE``, ...), so ``spec.load_search_space`` checks both forms
with the same rules. Ray Tune primitives are written as data (``{grid_search: [0, 1]}``,
``{loguniform: [1e-5, 1e-3]}``), a searcher or scheduler by name with its settings
(``search_alg: {optuna: {seed: 0}}``, ``scheduler: {asha: {max_t: 31}}``). ``hba_lines`` maps every
top-level key and every ``param_space`` key to its line, for messages that name file and line.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandScheduler, MedianStoppingRule

from hba_sweep.foundation.errors import SearchSpaceError
from hba_sweep.foundation.yaml_io import compose_bounded
from hba_sweep.training.demo_data import make_demo_data

SUFFIXES = (".yaml", ".yml")
KEYS = (
    "name",
    "base_config",
    "param_space",
    "num_samples",
    "search_alg",
    "scheduler",
    "metric",
    "mode",
    "resources",
    "max_failures",
    "fork_from_baseline",
    "max_concurrent",
    "evalsets",
    "prepare",
)
PRIMITIVES: dict[str, tuple[Callable[..., Any], str]] = {
    "grid_search": (tune.grid_search, "a list of values, e.g. {grid_search: [0, 1, 2]}"),
    "choice": (tune.choice, "a list of values, e.g. {choice: [4, 8, 16]}"),
    "uniform": (tune.uniform, "[low, high], e.g. {uniform: [0.0, 0.5]}"),
    "loguniform": (tune.loguniform, "[low, high] with 0 < low < high, e.g. {loguniform: [1e-5, 1e-3]}"),
    "randint": (tune.randint, "[low, high) integers, e.g. {randint: [1, 9]}"),
}
SEARCHERS = {
    "optuna": ("ray.tune.search.optuna", "OptunaSearch"),
    "hyperopt": ("ray.tune.search.hyperopt", "HyperOptSearch"),
}
SCHEDULERS = {
    "asha": ASHAScheduler,
    "hyperband": HyperBandScheduler,
    "median_stopping": MedianStoppingRule,
    "fifo": FIFOScheduler,
}
PREPARATIONS = ("demo_data",)  # the only preparation a data file can ask for: generate the demo data
ENV_RE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")
EXPONENT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")  # YAML 1.1 reads 1e-3 as a string


class _Where:
    """Builds messages ``file:line: text``."""

    def __init__(self, path: Path, lines: dict[str, int]):
        self.path, self.lines = path, lines

    def error(self, key: str, text: str) -> SearchSpaceError:
        line = self.lines.get(key)
        return SearchSpaceError(f"{self.path}{f':{line}' if line else ''}: {text}")


def _compose(path: Path) -> tuple[Any, dict[str, int]]:
    """The file's data (safe loader) and the line of each top-level and param_space key."""
    if not path.is_file():
        raise SearchSpaceError(
            f"{path}: no such search-space file. Fix: check the path "
            "(the shipped ones are in search_spaces/, e.g. search_spaces/demo.yaml)."
        )
    text = path.read_text()
    try:
        node, data = compose_bounded(text, str(path), SearchSpaceError)  # no alias bombs
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise SearchSpaceError(
            f"{path}{line}: not valid YAML ({getattr(exc, 'problem', None) or exc}). "
            "Fix: correct the syntax at that line."
        ) from None
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            lines[str(key.value)] = key.start_mark.line + 1
            if key.value == "param_space" and isinstance(value, yaml.MappingNode):
                for pkey, _ in value.value:
                    lines[f"param_space.{pkey.value}"] = pkey.start_mark.line + 1
    return data, lines


def _expand_env(value: Any) -> Any:
    """``${VAR}`` / ``${VAR:-default}`` in a path (the demo's data folder follows $HBA_DEMO_DATA)."""
    if not isinstance(value, str):
        return value
    return ENV_RE.sub(lambda m: os.environ.get(m.group(1)) or (m.group(2) or ""), value)


def _number(value: Any) -> Any:
    """``1e-3`` as the float it means (PyYAML follows YAML 1.1, which wants ``1.0e-3``)."""
    return float(value) if isinstance(value, str) and EXPONENT_RE.match(value) else value


def _primitive(where: _Where, key: str, value: dict) -> Any:
    """``{kind: args}`` -> the Ray Tune primitive; anything else in a mapping is an error."""
    kind = next(iter(value)) if len(value) == 1 else None
    if kind not in PRIMITIVES:
        close = difflib.get_close_matches(str(kind or next(iter(value), "")), PRIMITIVES, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise where.error(
            f"param_space.{key}",
            f"param_space.{key}: {value!r} is not a search primitive. Fix: {hint}"
            f"write one of {', '.join(PRIMITIVES)} as a one-key mapping, e.g. {{grid_search: [0, 1]}}.",
        )
    fn, form = PRIMITIVES[kind]
    args = [_number(a) for a in value[kind]] if isinstance(value[kind], list) else value[kind]
    bad = not isinstance(args, list) or not args
    if kind in ("uniform", "loguniform", "randint"):
        bad = (
            bad
            or len(args) != 2
            or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
            or args[0] >= args[1]
            or (kind == "loguniform" and args[0] <= 0)
            or (kind == "randint" and not all(isinstance(a, int) for a in args))
        )
    if bad:
        raise where.error(f"param_space.{key}", f"param_space.{key}: {kind} {args!r} is not valid. Fix: give {form}.")
    return fn(args) if kind in ("grid_search", "choice") else fn(*args)


def _param_space(where: _Where, value: Any) -> Any:
    if not isinstance(value, dict):
        return value  # spec reports the wrong type
    return {k: _primitive(where, k, v) if isinstance(v, dict) else _number(v) for k, v in value.items()}


def _named(where: _Where, key: str, value: Any, known: dict) -> tuple[str, dict]:
    """``name`` or ``{name: {settings}}`` -> (name, settings), checked against the known names."""
    name, settings = (
        (value, {})
        if isinstance(value, str)
        else next(iter(value.items()))
        if isinstance(value, dict) and len(value) == 1
        else (None, None)
    )
    if name not in known or not isinstance(settings, (dict, type(None))):
        close = difflib.get_close_matches(str(name), known, n=1)
        raise where.error(
            key,
            f"{key}: {value!r} is not known. Fix: {f'did you mean {close[0]}? ' if close else ''}"
            f"give one of {', '.join(known)}, alone or with settings, e.g. {key}: "
            f"{{{next(iter(known))}: {{...}}}}.",
        )
    return name, settings or {}


def _check_settings(where: _Where, key: str, name: str, cls: type, settings: dict) -> None:
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        allowed = None
    else:
        allowed = [p for p in params if p != "self"]
    for setting in settings:
        if allowed is not None and setting not in allowed:
            close = difflib.get_close_matches(setting, allowed, n=1)
            raise where.error(
                key,
                f"{key}: {name} has no setting {setting!r}. Fix: "
                f"{f'did you mean {close[0]}? ' if close else ''}use some of {', '.join(allowed)}.",
            )


def _factory(label: str, cls: type, settings: dict) -> Callable[[], Any]:
    """A zero-argument factory named like the Python form's (SEARCH_ALG / SCHEDULER), called by `run`."""

    def make():
        return cls(**settings)

    make.__name__ = make.__qualname__ = label
    return make


def _searcher(where: _Where, value: Any) -> Callable[[], Any] | None:
    if value is None:
        return None
    name, settings = _named(where, "search_alg", value, SEARCHERS)
    module, cls_name = SEARCHERS[name]
    cls = getattr(importlib.import_module(module), cls_name)  # Ray's wrapper; the package itself loads on use
    _check_settings(where, "search_alg", name, cls, settings)
    return _factory("SEARCH_ALG", cls, settings)


def _scheduler(where: _Where, value: Any) -> Callable[[], Any] | None:
    if value is None:
        return None
    name, settings = _named(where, "scheduler", value, SCHEDULERS)
    _check_settings(where, "scheduler", name, SCHEDULERS[name], settings)
    return _factory("SCHEDULER", SCHEDULERS[name], settings)


def _prepare(where: _Where, value: Any, base_config: Any) -> Callable[[], None] | None:
    if value is None:
        return None
    if value not in PREPARATIONS or not isinstance(base_config, str):
        raise where.error(
            "prepare",
            f"prepare: {value!r} is not a preparation a YAML study can ask for. Fix: use "
            "`prepare: demo_data` (generates the demo data where base_config points) or a Python "
            "search-space file with a PREPARE function.",
        )
    folder = Path(base_config) if Path(base_config).is_absolute() else where.path.parent / base_config

    def PREPARE() -> None:
        make_demo_data(folder.parent)

    return PREPARE


def parse(path: str | os.PathLike) -> SimpleNamespace:
    """Read a YAML search space into the names of the Python form; keys, primitives, searcher and
    scheduler are checked here (with lines), the rest by ``spec.load_search_space``."""
    path = Path(path)
    data, lines = _compose(path)
    where = _Where(path, lines)
    if not isinstance(data, dict):
        raise SearchSpaceError(
            f"{path}: expected a mapping of keys (name, base_config, param_space, ...), got "
            f"{type(data).__name__}. Fix: see search_spaces/README.md."
        )
    for key in data:
        if key not in KEYS:
            close = difflib.get_close_matches(str(key), KEYS, n=1)
            raise where.error(
                str(key),
                f"unknown key {key!r}. Fix: "
                f"{f'did you mean {close[0]}?' if close else 'use some of ' + ', '.join(KEYS) + '.'}",
            )
    values = {k: _expand_env(v) if k in ("base_config", "evalsets") else v for k, v in data.items()}
    values["param_space"] = _param_space(where, values.get("param_space")) if "param_space" in values else None
    values["search_alg"] = _searcher(where, values.get("search_alg"))
    values["scheduler"] = _scheduler(where, values.get("scheduler"))
    values["prepare"] = _prepare(where, values.get("prepare"), values.get("base_config"))
    names = {k.upper(): v for k, v in values.items() if v is not None or k == "max_concurrent" and k in data}
    return SimpleNamespace(**names, hba_lines=lines)
