"""Load a search-space file into a :class:`SearchSpace`: a Python module (executed) or YAML data
(``yaml_space.parse``, nothing executed), both checked by the same rules here.

The contract is documented in ``search_spaces/README.md``. Every mistake raises
:class:`SearchSpaceError` naming the file (and, for YAML, the line), the name and the fix.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune.schedulers import TrialScheduler
from ray.tune.search import SearchAlgorithm, Searcher

from hba_sweep.config import resolve_paths
from hba_sweep.foundation.errors import ConfigError, SearchSpaceError
from hba_sweep.foundation.yaml_io import read_yaml
from hba_sweep.sweep import yaml_space

REQUIRED = ("BASE_CONFIG", "PARAM_SPACE")
OPTIONAL = (
    "NAME",
    "SEARCH_ALG",
    "SCHEDULER",
    "METRIC",
    "MODE",
    "NUM_SAMPLES",
    "RESOURCES",
    "MAX_FAILURES",
    "FORK_FROM_BASELINE",
    "MAX_CONCURRENT",
    "EVALSETS",
    "PREPARE",
)
KNOWN = REQUIRED + OPTIONAL
RESOURCE_KEYS = ("cpu", "gpu")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class SearchSpace:
    """A loaded, type-checked search-space file (trials are not validated yet: see ``expand``)."""

    path: Path
    name: str
    base: dict[str, Any]
    base_source: str
    param_space: dict[str, Any]
    search_alg: Any = None  # a Searcher or a zero-argument factory
    scheduler: Any = None  # a TrialScheduler or a zero-argument factory
    metric: str | None = None
    mode: str | None = None
    num_samples: int = 1
    resources: dict[str, float] = field(default_factory=lambda: {"cpu": 1.0})
    max_failures: int = 2
    fork_from_baseline: bool = True
    max_concurrent: int | None = None
    evalsets: Any = None
    prepare: Callable[[], None] | None = None
    missing_base: Path | None = None  # BASE_CONFIG YAML that PREPARE has not created yet
    lines: dict[str, int] = field(default_factory=dict)  # YAML form: key (param_space.<key>) -> line

    @property
    def uses_searcher(self) -> bool:
        return self.search_alg is not None


def _fail(path: Path, problems: list[str], lines: dict[str, int] | None = None) -> SearchSpaceError:
    """One error listing every problem; a YAML file's problems name the key as written and its line."""
    if not lines:
        return SearchSpaceError("\n".join(f"{path}: {p}" for p in problems))
    out = []
    for problem in problems:
        first = re.match(r"(?:unknown name )?([A-Z][A-Z_]+)", problem)
        line = lines.get(first.group(1).lower()) if first else None
        text = re.sub(r"\b(" + "|".join(KNOWN) + r")\b", lambda m: m.group(1).lower(), problem)
        out.append(f"{path}{f':{line}' if line else ''}: {text}")
    return SearchSpaceError("\n".join(out))


def _exec_module(path: Path) -> Any:
    """Execute the file as a module; a Python error becomes a SearchSpaceError with file and line."""
    if not path.is_file():
        raise SearchSpaceError(
            f"{path}: no such search-space file. Fix: check the path "
            "(the shipped ones are in search_spaces/, e.g. search_spaces/demo.py)."
        )
    if path.suffix != ".py":
        raise SearchSpaceError(
            f"{path}: a search-space file must be a Python (.py) or YAML (.yaml) file. "
            "Fix: see search_spaces/README.md for the contract."
        )
    module_name = f"hba_search_space_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise SearchSpaceError(
            f"{path}:{exc.lineno}: syntax error: {exc.msg}. Fix: correct the Python syntax."
        ) from None
    except Exception as exc:  # the user's code failed: report where, without a traceback
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve() == path.resolve()]
        line = f":{frames[-1].lineno}" if frames else ""
        raise SearchSpaceError(
            f"{path}{line}: executing the file raised {type(exc).__name__}: {exc}. Fix: correct the code at that line."
        ) from None
    return module


def _check_names(module: Any) -> list[str]:
    problems = []
    names = {n for n in vars(module) if n.isupper() and not n.startswith("_")}
    for name in sorted(names - set(KNOWN)):
        close = difflib.get_close_matches(name, KNOWN, n=1, cutoff=0.6)
        fix = (
            f"did you mean {close[0]}?"
            if close
            else f"use one of {', '.join(KNOWN)}; name helper constants in lower case or with a leading underscore."
        )
        problems.append(f"unknown name {name}. Fix: {fix}")
    for name in REQUIRED:
        if name not in vars(module):
            what = (
                "a dict of config keys or the path of a YAML config"
                if name == "BASE_CONFIG"
                else "a dict of config keys to values or ray.tune primitives"
            )
            problems.append(f"{name} is missing. Fix: define {name} = {what}.")
    return problems


def _load_base(path: Path, value: Any, problems: list[str]) -> tuple[dict[str, Any], str, Path | None]:
    """BASE_CONFIG: a dict, or a YAML path relative to the search-space file."""
    if isinstance(value, dict):
        return resolve_paths(value, path.parent), f"{path} BASE_CONFIG", None
    if isinstance(value, (str, Path)):
        yaml_path = Path(value) if Path(value).is_absolute() else path.parent / value
        if not yaml_path.is_file():
            return {}, str(yaml_path), yaml_path
        try:
            return resolve_paths(read_yaml(yaml_path), yaml_path.parent), str(yaml_path), None
        except ConfigError as exc:
            problems.append(f"BASE_CONFIG: {exc}")
            return {}, str(yaml_path), None
    problems.append(f"BASE_CONFIG={value!r} must be a dict or the path of a YAML config. Fix: give one of them.")
    return {}, str(path), None


def _check_resources(value: Any) -> list[str]:
    if not isinstance(value, dict):
        return [f"RESOURCES={value!r} must be a dict such as {{'cpu': 1, 'gpu': 0.5}}. Fix: write it as a dict."]
    problems = []
    for key, amount in value.items():
        if key not in RESOURCE_KEYS:
            problems.append(f"RESOURCES[{key!r}] is not a resource. Fix: use {list(RESOURCE_KEYS)}.")
        elif isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
            problems.append(f"RESOURCES[{key!r}]={amount!r} must be a non-negative number. Fix: e.g. 1 or 0.5.")
        elif key == "gpu" and amount > 1 and amount != int(amount):
            problems.append(f"RESOURCES['gpu']={amount!r}: fractions are only allowed below 1. Fix: use 0.5, 1, 2...")
    return problems


def _typed(module: Any, name: str, kinds: tuple[type, ...], default: Any, problems: list[str], fix: str) -> Any:
    value = getattr(module, name, default)
    if value is default:
        return value
    if isinstance(value, bool) and bool not in kinds:
        problems.append(f"{name}={value!r} has the wrong type. Fix: {fix}")
        return default
    if not isinstance(value, kinds):
        problems.append(f"{name}={value!r} has the wrong type. Fix: {fix}")
        return default
    return value


def _check_param_space(space: Any) -> list[str]:
    if not isinstance(space, dict):
        return [
            f"PARAM_SPACE must be a dict of config keys, got {type(space).__name__}. "
            "Fix: e.g. PARAM_SPACE = {'perturb_type': tune.grid_search(['none', 'label_shuffle'])}."
        ]
    return [
        f"PARAM_SPACE key {k!r} is not a string. Fix: use config key names." for k in space if not isinstance(k, str)
    ]


def load_search_space(path: str | Path) -> SearchSpace:
    """Read (YAML) or execute (Python) and check a search-space file; raise SearchSpaceError listing every problem."""
    path = Path(path)
    module = yaml_space.parse(path) if path.suffix in yaml_space.SUFFIXES else _exec_module(path)
    lines = getattr(module, "hba_lines", {})
    problems = _check_names(module)
    if problems:
        raise _fail(path, problems, lines)
    base, base_source, missing = _load_base(path, module.BASE_CONFIG, problems)
    problems += _check_param_space(module.PARAM_SPACE)
    name = _typed(module, "NAME", (str,), path.stem, problems, "give a short name of letters, digits, _ . -")
    if isinstance(name, str) and not NAME_RE.match(name):
        problems.append(f"NAME={name!r} is not a valid experiment name. Fix: use letters, digits, _ . - only.")
    num_samples = _typed(module, "NUM_SAMPLES", (int,), 1, problems, "use an integer of 1 or more.")
    if num_samples < 1:
        problems.append(f"NUM_SAMPLES={num_samples} must be at least 1. Fix: use 1 or more.")
    mode = _typed(module, "MODE", (str,), None, problems, "use 'min' or 'max'.")
    if mode not in (None, "min", "max"):
        problems.append(
            f"MODE={mode!r} must be 'min' or 'max'. Fix: use 'min' for val_loss, 'max' for behavioral_rsa_rho."
        )
    metric = _typed(module, "METRIC", (str,), None, problems, "name a reported metric such as 'val_loss'.")
    search_alg = getattr(module, "SEARCH_ALG", None)
    scheduler = getattr(module, "SCHEDULER", None)
    if (search_alg is not None or scheduler is not None) and (metric is None or mode is None):
        problems.append("SEARCH_ALG/SCHEDULER need METRIC and MODE. Fix: e.g. METRIC = 'val_loss'; MODE = 'min'.")
    resources = getattr(module, "RESOURCES", {"cpu": 1})
    problems += _check_resources(resources)
    max_failures = _typed(module, "MAX_FAILURES", (int,), 2, problems, "use an integer (-1: retry forever).")
    if max_failures < -1:
        problems.append(f"MAX_FAILURES={max_failures} must be -1 or more. Fix: use e.g. 2.")
    fork = _typed(module, "FORK_FROM_BASELINE", (bool,), True, problems, "use True or False.")
    max_concurrent = _typed(module, "MAX_CONCURRENT", (int, type(None)), None, problems, "use an integer or None.")
    if max_concurrent is not None and max_concurrent < 1:
        problems.append(f"MAX_CONCURRENT={max_concurrent} must be at least 1. Fix: use 1 or more, or None.")
    prepare = getattr(module, "PREPARE", None)
    if prepare is not None and not callable(prepare):
        problems.append("PREPARE must be a function taking no arguments. Fix: define def PREPARE(): ...")
    if missing is not None and prepare is None:
        problems.append(
            f"BASE_CONFIG: {missing}: no such YAML file. Fix: correct the path (relative to {path.parent})."
        )
    if problems:
        raise _fail(path, problems, lines)
    evalsets = getattr(module, "EVALSETS", None)
    if isinstance(evalsets, str) and not Path(evalsets).is_absolute():
        evalsets = str(path.parent / evalsets)
    return SearchSpace(
        path=path,
        name=name,
        base=base,
        base_source=base_source,
        param_space=dict(module.PARAM_SPACE),
        search_alg=search_alg,
        scheduler=scheduler,
        metric=metric,
        mode=mode,
        num_samples=num_samples,
        resources={k: float(v) for k, v in resources.items()},
        max_failures=max_failures,
        fork_from_baseline=fork,
        max_concurrent=max_concurrent,
        evalsets=evalsets,
        prepare=prepare,
        missing_base=missing,
        lines=lines,
    )


def reload_base(space: SearchSpace) -> SearchSpace:
    """Read BASE_CONFIG again after PREPARE created it."""
    if space.missing_base is None:
        return space
    if not space.missing_base.is_file():
        raise SearchSpaceError(f"{space.path}: PREPARE did not create {space.missing_base}. Fix: check PREPARE.")
    base = resolve_paths(read_yaml(space.missing_base), space.missing_base.parent)
    space.base, space.missing_base = base, None
    return space


def instantiate(space: SearchSpace, what: str) -> Any:
    """SEARCH_ALG / SCHEDULER: call a factory (a class or function), pass an instance through."""
    value = space.search_alg if what == "SEARCH_ALG" else space.scheduler
    if value is None:
        return None
    if isinstance(value, (Searcher, SearchAlgorithm, TrialScheduler)):
        return value
    if callable(value):
        try:
            return value()
        except Exception as exc:
            raise SearchSpaceError(
                f"{space.path}: {what}() raised {type(exc).__name__}: {exc}. "
                "Fix: correct the factory (is the package installed?)."
            ) from None
    raise SearchSpaceError(
        f"{space.path}: {what}={value!r} is neither a Ray Tune object nor a factory. "
        "Fix: give e.g. OptunaSearch or a function returning one."
    )
