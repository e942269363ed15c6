"""Groups of perturbed trials that may be averaged: same window, same settings, same inputs.

Seeds (``random_seed``, ``perturb_seed``) are what a window's trials may differ in. Any other setting
that differs between trials of one window (``lr``, ``rank``, ...), and any input file whose recorded
content differs (column ``input_<role>``: its short SHA-256), becomes a group column: a column of
``summary.parquet`` and ``windows.parquet`` that separates the groups of the report and the statistics
instead of being averaged away.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import pandas as pd

from analysis import definitions as d
from analysis.records import Study, Trial
from hba_sweep.artifacts.identity import EXTENDS, settings_of

SEEDS = ("random_seed", "perturb_seed")
INPUT_PREFIX = "input_"
SHORT = 12  # characters of a SHA-256 shown


def short(digest: Any) -> str | None:
    return str(digest)[:SHORT] if digest else None


def trial_values(trial: Trial) -> dict[str, Any]:
    """A perturbed trial's settings and input digests, seeds, window and ``epochs`` aside."""
    skip = {*SEEDS, *EXTENDS, *d.WINDOW}
    values = {k: v for k, v in settings_of(trial.config).items() if k not in skip}
    values.update({f"{INPUT_PREFIX}{role}": short(entry.get("sha256")) for role, entry in trial.inputs.items()})
    return values


def _scalar(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool, type(None))) else json.dumps(value, sort_keys=True)


def group_settings(study: Study) -> tuple[list[str], pd.DataFrame]:
    """(the group columns, one row per perturbed trial: ``trial_id`` and its value of each).

    A group column is a setting or input that differs between the perturbed trials of one window."""
    perturbed = [t for t in study.trials.values() if not t.is_baseline]
    values = {t.trial_id: trial_values(t) for t in perturbed}
    every = set().union(*values.values()) if values else set()
    seen: dict[tuple, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for trial in perturbed:
        window = tuple(str(trial.config.get(k)) for k in d.WINDOW)
        mine = values[trial.trial_id]
        for key in every:
            seen[window][key].add(json.dumps(mine.get(key), sort_keys=True, default=str))
    keys = sorted({k for per_key in seen.values() for k, vals in per_key.items() if len(vals) > 1})
    rows = [{"trial_id": tid, **{k: _scalar(v.get(k)) for k in keys}} for tid, v in values.items()]
    return keys, pd.DataFrame(rows, columns=["trial_id", *keys])


def with_groups(frame: pd.DataFrame, keys: list[str], table: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (rows with ``trial_id``) with the group columns after the window columns."""
    if not keys or frame.empty:
        return frame.assign(**{k: pd.Series(dtype=object) for k in keys if k not in frame}) if keys else frame
    out = frame.drop(columns=[k for k in keys if k in frame]).merge(table, on="trial_id", how="left")
    first = [c for c in out.columns if c not in keys]
    at = max((first.index(c) for c in d.WINDOW if c in first), default=len(first) - 1) + 1
    return out[first[:at] + keys + first[at:]]


def describe(row: pd.Series | dict, keys: list[str]) -> str:
    """``lr=0.01, rank=8`` for the group of ``row`` ("" without group columns)."""
    return ", ".join(f"{k}={row[k]}" for k in keys)
