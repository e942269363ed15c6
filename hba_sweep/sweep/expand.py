"""Expand a search space into concrete trials and validate every one with the config schema.

Grid spaces (no SEARCH_ALG) expand to the exact trial list that runs: grid x NUM_SAMPLES, random
primitives drawn with a fixed seed, so ``--dry-run`` shows what ``run`` will run. Searcher spaces
are validated on the base config plus a few draws from the space.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ray.tune.search.sample import Domain
from ray.tune.search.variant_generator import generate_variants

from hba_sweep.config import TrainConfig, from_dict
from hba_sweep.config.file_checks import FILE_CHECK_FIELDS, file_problems
from hba_sweep.foundation.errors import ConfigError, SearchSpaceError
from hba_sweep.sweep.naming import duplicates, name_trials
from hba_sweep.sweep.spec import SearchSpace

SEARCHER_SAMPLES = 8
MAX_LISTED = 200
MAX_DUPLICATES = 10


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


SCALARS = (str, int, float, bool, type(None))


def _plain_grid(param_space: dict[str, Any]) -> list[tuple[str, list[Any]]] | None:
    """The grid_search lists of a space of constants and grids of plain values, in Ray Tune's order
    (by key; the first varies fastest); None for anything else (random primitives, nesting)."""
    grids = []
    for key, value in param_space.items():
        if isinstance(value, dict) and list(value) == ["grid_search"]:
            values = value["grid_search"]
            if not isinstance(values, (list, tuple)) or not values or not all(isinstance(v, SCALARS) for v in values):
                return None
            grids.append((key, list(values)))
        elif not isinstance(value, SCALARS):
            return None
    return sorted(grids)


def _resolved(param_space: dict[str, Any], num_samples: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    """The resolved PARAM_SPACE of every trial, in Ray Tune's order (``generate_variants``); a grid of
    plain values without copying the space per trial."""
    grids = _plain_grid(param_space)
    if grids is not None:
        keys = [key for key, _ in reversed(grids)]
        for _ in range(num_samples):
            for combination in itertools.product(*(values for _, values in reversed(grids))):
                yield {**param_space, **dict(zip(keys, combination, strict=True))}
        return
    rng = np.random.RandomState(seed)
    for _ in range(num_samples):
        for _, resolved in generate_variants(param_space, random_state=rng):
            yield resolved


def _variants(space: SearchSpace) -> Iterator[dict[str, Any]]:
    count = SEARCHER_SAMPLES if space.uses_searcher else space.num_samples
    try:
        yield from _resolved(space.param_space, count)
    except Exception as exc:
        raise SearchSpaceError(
            f"{space.path}: PARAM_SPACE could not be expanded ({type(exc).__name__}: {exc}). "
            "Fix: use ray.tune primitives (grid_search, choice, uniform, loguniform, ...)."
        ) from None


class _Validator:
    """Validates trials with the config schema; the data files are looked at once per distinct set
    of the settings the file checks read (``file_checks.FILE_CHECK_FIELDS``)."""

    def __init__(self, space: SearchSpace, check_files: bool) -> None:
        self.space, self.check_files = space, check_files
        self.problems: list[str] = []
        self.missing: set[str] = set()
        self._checked: set[tuple] = set()

    def __call__(self, values: dict[str, Any], label: str) -> dict[str, Any] | None:
        try:
            cfg = from_dict({**self.space.base, **values}, source=label, check_files=False)
        except ConfigError as exc:
            self.problems.extend(str(exc).splitlines())
            return None
        if self.check_files:
            key = tuple(getattr(cfg, name) for name in FILE_CHECK_FIELDS)
            if key not in self._checked:
                self._checked.add(key)
                self.missing.update(problem.split(": ", 1)[1] for problem in file_problems(cfg, label))
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


def _trial(index: int, varied: dict[str, Any]) -> str:
    """``trial 3 (lr=0.01, rank=8)``: a trial by its place in the expansion and its PARAM_SPACE values."""
    shown = ", ".join(f"{k}={v!r}" for k, v in varied.items())
    return f"trial {index}" + (f" ({shown})" if shown else "")


def _label(space: SearchSpace, index: int, varied: dict[str, Any]) -> str:
    return f"{space.path} {_trial(index, varied)}"


def _has_grid(value: Any) -> bool:
    if isinstance(value, dict):
        return "grid_search" in value or any(_has_grid(v) for v in value.values())
    return False


def _varied_keys(space: SearchSpace) -> set[str]:
    return {k for k, v in space.param_space.items() if isinstance(v, Domain) or _has_grid(v) or callable(v)}


def _duplicated(space: SearchSpace, trials: list[Trial], groups: list[list[int]]) -> SearchSpaceError:
    """The trials that repeat another one, each group once, and how to vary a repeat instead."""
    lines = [" = ".join(_trial(i, trials[i].varied) for i in group) for group in groups[:MAX_DUPLICATES]]
    if len(groups) > MAX_DUPLICATES:
        lines.append(f"... and {len(groups) - MAX_DUPLICATES} more")
    notes, fixes = [], []
    if not space.fork_from_baseline and any(trials[g[0]].config["perturb_type"] == "none" for g in groups):
        fixes.append("; or let the none trials be shared baselines: FORK_FROM_BASELINE = True (the default)")
        notes.append(
            "a perturb_type: none trial ignores perturb_epoch, perturb_length, perturb_seed and perturb_fraction"
        )
    if space.num_samples > 1:
        random = any(isinstance(v, Domain) or callable(v) for v in space.param_space.values())
        notes.append(
            f"NUM_SAMPLES = {space.num_samples} repeats the grid"
            + (", and some random draws repeat another trial's" if random else ", which draws no value of its own")
        )
    count = sum(len(g) - 1 for g in groups)
    return SearchSpaceError(
        f"{space.path}: {count} trial(s) of the grid repeat another trial (the same resolved config"
        + "".join(f"; {n}" for n in notes)
        + "), so the same trial would run twice and count as two:\n  "
        + "\n  ".join(lines)
        + "\nFix: give each value once in a grid_search list (values that resolve equal, such as 0.01 and "
        "'1e-2' or 1 and 1.0, are one value); to repeat a trial, vary random_seed (initialisation) or "
        "perturb_seed (perturbation) with grid_search"
        + (" and set NUM_SAMPLES = 1" if space.num_samples > 1 else "")
        + ", e.g. 'random_seed': tune.grid_search([1, 2, 3])"
        + "".join(fixes)
        + "."
    )


def expand(space: SearchSpace, check_files: bool = True) -> Expansion:
    """All trials of a grid space (or samples of a searcher space), validated; raise on any bad trial
    or on a trial planned twice."""
    if space.uses_searcher and any(_has_grid(v) for v in space.param_space.values()):
        raise SearchSpaceError(
            f"{space.path}: PARAM_SPACE uses tune.grid_search together with SEARCH_ALG. "
            "Fix: use tune.choice with a search algorithm, or drop SEARCH_ALG for a grid."
        )
    validate = _Validator(space, check_files)
    trials = []
    varied_keys = _varied_keys(space)
    total = 0
    for index, values in enumerate(_variants(space)):
        total += 1
        varied = {k: v for k, v in values.items() if k in varied_keys}
        config = validate(values, _label(space, index, varied))
        if config is not None:
            trials.append(Trial(name="", config=config, varied=varied))
    if validate.problems:
        raise _invalid(space, validate.problems, total)
    if not space.uses_searcher:
        groups = duplicates([t.config for t in trials], baselines_shared=space.fork_from_baseline)
        if groups:
            raise _duplicated(space, trials, groups)
    name_trials(trials)
    return Expansion(trials=trials, missing_files=sorted(validate.missing), sampled=space.uses_searcher)
