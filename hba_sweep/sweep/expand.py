"""Expand a search space into concrete trials and validate every one with the config schema.

Grid spaces (no SEARCH_ALG) expand to the exact trial list that runs: grid x NUM_SAMPLES, random
primitives drawn with a fixed seed, so ``--dry-run`` shows what ``run`` will run. Searcher spaces
are validated on the base config plus a few draws from the space.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ray.tune.search.sample import Domain
from ray.tune.search.variant_generator import generate_variants

from hba_sweep.config import TrainConfig, from_dict, run_name
from hba_sweep.config.file_checks import file_problems
from hba_sweep.foundation.errors import ConfigError, SearchSpaceError
from hba_sweep.sweep.spec import SearchSpace

# Settings that name a run in the study (config.run_name); other varied settings are appended.
NAMED_FIELDS = {
    "backbone",
    "rank",
    "vision_layers",
    "transformer_layers",
    "random_seed",
    "perturb_type",
    "perturb_epoch",
    "perturb_length",
    "perturb_seed",
    "perturb_fraction",
    "run_name",
}
SEARCHER_SAMPLES = 8
MAX_LISTED = 200


@dataclass
class Trial:
    """One concrete trial: its name (like the study's run names) and full, validated config."""

    name: str
    config: dict[str, Any]
    varied: dict[str, Any] = field(default_factory=dict)  # the values PARAM_SPACE chose

    @property
    def train_config(self) -> TrainConfig:
        return TrainConfig(**self.config)


@dataclass
class Expansion:
    """The trials of a space and the data files they need that do not exist."""

    trials: list[Trial]
    missing_files: list[str]
    sampled: bool = False  # True for searcher spaces: trials are samples, not the run's list


def _variants(param_space: dict[str, Any], num_samples: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(num_samples):
        for _, resolved in generate_variants(param_space, random_state=rng):
            out.append(resolved)
    return out


def _has_grid(value: Any) -> bool:
    if isinstance(value, dict):
        return "grid_search" in value or any(_has_grid(v) for v in value.values())
    return False


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value).replace("/", "-")


def name_trials(trials: list[Trial]) -> None:
    """Name each trial like the study's runs; append varied unnamed settings, then a counter, if needed."""
    varied = sorted({k for t in trials for k, v in t.config.items() if any(o.config.get(k) != v for o in trials)})
    extra = [k for k in varied if k not in NAMED_FIELDS and k not in ("init_from", "init_epoch", "save_path")]
    seen: dict[str, int] = {}
    for trial in trials:
        name = run_name(trial.train_config)
        name += "".join(f"_{k}{_fmt(trial.config[k])}" for k in extra)
        count = seen.get(name, 0)
        seen[name] = count + 1
        trial.name = name if count == 0 else f"{name}_s{count}"


def _validate(
    space: SearchSpace, values: dict[str, Any], label: str, check_files: bool, problems: list[str], missing: set[str]
) -> dict[str, Any] | None:
    merged = {**space.base, **values}
    try:
        cfg = from_dict(merged, source=label, check_files=False)
    except ConfigError as exc:
        problems.extend(str(exc).splitlines())
        return None
    if check_files:
        for problem in file_problems(cfg, label):
            missing.add(problem.split(": ", 1)[1])
    return cfg.to_dict()


def _where(space: SearchSpace, problem: str) -> str:
    """The file (and for a YAML space the line of the PARAM_SPACE key) a trial problem comes from."""
    field_name = re.match(r"(?:unknown key ')?(\w+)", problem)
    line = space.lines.get(f"param_space.{field_name.group(1)}") if field_name else None
    return f"{space.path}:{line}" if line else str(space.path)


def _invalid(space: SearchSpace, problems: list[str], total: int) -> SearchSpaceError:
    """Every distinct mistake once: with the number of trials it is in (all of them, or which ones)."""
    by_text: dict[str, list[str]] = {}
    for problem in problems:
        label, text = problem.split(": ", 1)
        by_text.setdefault(text, []).append("trial " + label.rsplit(" trial ", 1)[-1])
    bad = len({p.split(": ", 1)[0] for p in problems})
    lines = []
    for text, trials in by_text.items():
        which = (
            f"all {total} trials"
            if len(trials) == total
            else f"{len(trials)} of {total} trials ({', '.join(trials[:10])}{', ...' if len(trials) > 10 else ''})"
        )
        lines.append(f"{_where(space, text)}: in {which}: {text}")
    shown = lines[:MAX_LISTED] + ([f"... and {len(lines) - MAX_LISTED} more"] if len(lines) > MAX_LISTED else [])
    return SearchSpaceError(
        f"{space.path}: {bad} of {total} trials are invalid "
        f"(base config: {space.base_source}):\n  " + "\n  ".join(shown)
    )


def _label(space: SearchSpace, index: int, varied: dict[str, Any]) -> str:
    shown = ", ".join(f"{k}={v!r}" for k, v in varied.items())
    return f"{space.path} trial {index}" + (f" ({shown})" if shown else "")


def _varied_keys(space: SearchSpace) -> set[str]:
    return {k for k, v in space.param_space.items() if isinstance(v, Domain) or _has_grid(v) or callable(v)}


def expand(space: SearchSpace, check_files: bool = True) -> Expansion:
    """All trials of a grid space (or samples of a searcher space), validated; raise on any bad trial."""
    if space.uses_searcher and any(_has_grid(v) for v in space.param_space.values()):
        raise SearchSpaceError(
            f"{space.path}: PARAM_SPACE uses tune.grid_search together with SEARCH_ALG. "
            "Fix: use tune.choice with a search algorithm, or drop SEARCH_ALG for a grid."
        )
    try:
        count = SEARCHER_SAMPLES if space.uses_searcher else space.num_samples
        variants = _variants(space.param_space, count)
    except Exception as exc:
        raise SearchSpaceError(
            f"{space.path}: PARAM_SPACE could not be expanded ({type(exc).__name__}: {exc}). "
            "Fix: use ray.tune primitives (grid_search, choice, uniform, loguniform, ...)."
        ) from None
    problems: list[str] = []
    missing: set[str] = set()
    trials = []
    varied_keys = _varied_keys(space)
    for index, values in enumerate(variants):
        varied = {k: v for k, v in values.items() if k in varied_keys}
        config = _validate(space, values, _label(space, index, varied), check_files, problems, missing)
        if config is not None:
            trials.append(Trial(name="", config=config, varied=varied))
    if problems:
        raise _invalid(space, problems, len(variants))
    name_trials(trials)
    return Expansion(trials=trials, missing_files=sorted(missing), sampled=space.uses_searcher)
