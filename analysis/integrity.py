"""What makes a gathered study's numbers trustworthy: one study at a time, each trial counted once,
baselines that are what study.json says they are.

- **One study.** A folder holding several studies (several ``study.json``, or trials outside the one
  study found) is refused unless the caller pools them knowingly (``analyze --pool-studies``).
- **Distinct trials.** Two trials of equal identity (:class:`hba_sweep.artifacts.identity.Identity`:
  settings, ``epochs`` aside, and the recorded input digests) are one trial run twice, never two seeds:
  the one with more epochs is kept (else the first by trial id), the other is left out of everything.
- **Checked links.** A perturbed trial's baseline from ``study.json`` must have the fork's settings with
  the perturbation reset and the same recorded inputs; a link that fails is an error, never used.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable
from typing import Any

from analysis.records import Trial
from hba_sweep.artifacts.identity import Identity, differences, settings_of
from hba_sweep.artifacts.manifest import MANIFEST
from hba_sweep.config import FORK_MAY_CHANGE, PATH_FIELDS
from hba_sweep.config.train_config import PERTURB_FIELDS
from hba_sweep.foundation.errors import DataError

NOT_PAIRING = FORK_MAY_CHANGE | set(PATH_FIELDS)  # what a fork may change from its baseline, data locations
LINK_FIX = (
    "restore study.json as the study wrote it (only the driver writes it; a hand-edited baseline link makes "
    "every deviation of that fork wrong), or move it away to analyse with baselines matched by their own records."
)


def nearest_study(path: str, study_dirs: Iterable[str]) -> str | None:
    """The innermost folder holding a study.json that contains ``path`` (None: none does)."""
    inside = [s for s in study_dirs if path == s or path.startswith(s.rstrip("/") + "/")]
    return max(inside, key=len) if inside else None


def check_one_study(root: str, shown: str, trial_dirs: Iterable[str], study_dirs: list[str]) -> None:
    """DataError when the trials under ``root`` belong to more than one study (``shown``: the folder as
    the user named it), naming the studies and the fix."""
    groups: dict[str | None, int] = {}
    for trial_dir in trial_dirs:
        where = nearest_study(trial_dir, study_dirs)
        groups[where] = groups.get(where, 0) + 1
    if len(groups) <= 1:
        return
    studies = sorted((posixpath.relpath(s, root), n) for s, n in groups.items() if s is not None)
    parts = [f"{name} ({n} trials)" for name, n in studies]
    if None in groups:
        parts.append(f"{groups[None]} trial folder(s) outside any study")
    first = studies[0][0] if studies and studies[0][0] != "." else "<name>"
    example = shown.rstrip("/") + "/" + first
    raise DataError(
        f"{shown}: holds {len(groups)} studies: {', '.join(parts)}; analysing them together would pool their "
        f"trials and count their seeds together. Fix: analyze each one, e.g. `python -m hba_sweep analyze "
        f"{example}`, or add --pool-studies to pool them knowingly."
    )


def comparable(trial: Trial) -> dict[str, Any]:
    """The trial's settings with its perturbation reset (what its baseline must have)."""
    return {k: v for k, v in settings_of(trial.config).items() if k not in PERTURB_FIELDS}


def link_differences(fork: Trial, base: Trial) -> list[str]:
    """Each difference between a baseline's own record and the fork's settings with the perturbation
    reset; input files compared where both recorded them."""
    both = bool(fork.inputs) and bool(base.inputs)
    old = Identity(comparable(base), base.inputs if both else {})
    new = Identity(comparable(fork), fork.inputs if both else {})
    return differences(old, new, extends=True)


def check_link(fork: Trial, base: Trial, manifest_file: str) -> None:
    """DataError when ``base`` (study.json's baseline of ``fork``) is not the fork's baseline by their records."""
    problems = link_differences(fork, base)
    if problems:
        raise DataError(
            f"{manifest_file}: trial {fork.label} [{fork.trial_id}] links baseline {base.label} "
            f"[{base.trial_id}], but their own records differ (baseline -> fork, perturbation fields and "
            f"epochs aside): {'; '.join(problems)}. Fix: {LINK_FIX}"
        )


def identity_key(trial: Trial) -> str:
    """Equal for two runs of the same trial: settings (``epochs`` aside) and recorded input digests."""
    return Identity(settings_of(trial.config), trial.inputs).key


def pairing_key(trial: Trial) -> str:
    """Equal for a baseline and its forks when study.json does not link them: every setting a fork may not
    change, and the recorded input digests."""
    settings = {k: v for k, v in settings_of(trial.config).items() if k not in NOT_PAIRING}
    digests = {role: entry.get("sha256") for role, entry in sorted(trial.inputs.items())}
    return json.dumps([settings, digests], sort_keys=True, default=str)


def last_epoch(trial: Trial) -> int:
    epochs = list(trial.checkpoints) + [int(r["epoch"]) for r in trial.history if isinstance(r.get("epoch"), int)]
    return max(epochs, default=-1)


def drop_duplicates(trials: dict[str, Trial]) -> list[str]:
    """Remove trials of equal identity but one (more epochs, else the first by trial id) from ``trials``;
    links to a removed trial point at the kept one. Returns one report line per removed trial."""
    kept: dict[str, Trial] = {}
    removed: dict[str, Trial] = {}
    for trial in sorted(trials.values(), key=lambda t: (-last_epoch(t), t.trial_id)):
        key = identity_key(trial)
        if key in kept:
            removed[trial.trial_id] = kept[key]
        else:
            kept[key] = trial
    lines = []
    for tid, keeper in sorted(removed.items()):
        dup = trials.pop(tid)
        lines.append(
            f"{dup.label} [{tid}]: duplicate of {keeper.label} [{keeper.trial_id}] (same settings and inputs: "
            f"one trial run twice, not another seed), left out of every table, mean and test"
        )
    for trial in trials.values():
        if trial.baseline_id in removed:
            trial.baseline_id = removed[trial.baseline_id].trial_id
    return lines


def record_trial_files(trial: Trial, meta: dict[str, Any]) -> None:
    """A trial's recorded inputs and version from one of its meta.json (older checkpoints lack them)."""
    if isinstance(meta.get("inputs"), dict) and meta["inputs"]:
        trial.inputs = dict(meta["inputs"])
    if meta.get("version"):
        trial.version = str(meta["version"])


def is_manifest(path: str) -> bool:
    return posixpath.basename(path) == MANIFEST
