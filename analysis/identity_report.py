"""The report's record of a study's identity: the settings every trial shares, those that differ, the
input files each trial read (with their SHA-256) and the product versions that made them."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Any

from analysis.groups import INPUT_PREFIX, short
from analysis.records import Study
from hba_sweep.artifacts.identity import settings_of


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def settings_lines(study: Study, group_keys: list[str]) -> list[str]:
    values: dict[str, Counter] = defaultdict(Counter)
    for trial in study.trials.values():
        for key, value in settings_of(trial.config).items():
            values[key][_show(value)] += 1
    n = len(study.trials)
    shared = {k: next(iter(c)) for k, c in values.items() if len(c) == 1 and sum(c.values()) == n}
    differ = {k: sorted(c) for k, c in values.items() if k not in shared}
    lines = [
        f"- settings shared by all {n} trials: " + (", ".join(f"{k}={v}" for k, v in sorted(shared.items())) or "none")
    ]
    lines.append(
        "- settings that differ between trials: "
        + ("; ".join(f"{k} ({', '.join(v)})" for k, v in sorted(differ.items())) or "none")
    )
    lines.append(
        "- settings and inputs that separate the groups of a window (columns of `summary.parquet` and "
        "`windows.parquet`): "
        + (", ".join(group_keys) if group_keys else "none: the trials of each window differ only in their seeds")
    )
    return lines


def inputs_lines(study: Study) -> list[str]:
    by_role: dict[str, Counter] = defaultdict(Counter)
    missing = 0
    for trial in study.trials.values():
        if not trial.inputs:
            missing += 1
        for role, entry in trial.inputs.items():
            by_role[role][(str(entry.get("path")), short(entry.get("sha256")), entry.get("files"))] += 1
    lines = []
    for role, variants in sorted(by_role.items()):
        shown = [
            f"{path}{f' ({files} files)' if files else ''}, sha256 {digest} ({count} trials)"
            for (path, digest, files), count in sorted(variants.items())
        ]
        lines.append(f"- input `{role}`: " + "; ".join(shown))
        if len({digest for _, digest, _ in variants}) > 1:
            lines.append(
                f"- **trials were made with different `{role}` contents**: they are never pooled (a fork pairs only "
                f"with a baseline of the same inputs; perturbed trials of different inputs are separate groups, "
                f"column `{INPUT_PREFIX}{role}`)"
            )
    if missing:
        lines.append(
            f"- {missing} trial(s) record no input files (checkpoints written before inputs were recorded): their "
            "identity is their settings only"
        )
    return lines or ["- no trial records its input files"]


def version_lines(study: Study) -> list[str]:
    versions = Counter(t.version or "unrecorded" for t in study.trials.values())
    line = "- product version: " + ", ".join(f"{v} ({n} trials)" for v, n in sorted(versions.items()))
    if len(versions) > 1:
        line += " - **trials were made by different versions**; compare their numbers with care"
    return [line]


def identity_lines(study: Study, group_keys: list[str]) -> list[str]:
    """The report section's lines (after the heading)."""
    return [*settings_lines(study, group_keys), *inputs_lines(study), *version_lines(study)]
