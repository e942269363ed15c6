"""What study.json records of a plan: each trial's role, phase, varied settings and baseline; trials of
earlier search spaces kept (``in_space`` false) and an ``extensions`` entry whenever the space grew or
shrank (read and written by :mod:`hba_sweep.artifacts.manifest`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hba_sweep.artifacts.identity import Identity
from hba_sweep.foundation import storage
from hba_sweep.sweep.plan import BASELINES, PERTURBED, TRIALS, Plan
from hba_sweep.sweep.spec import SearchSpace
from hba_sweep.sweep.study_identity import manifest_identity

__all__ = ["make_manifest", "manifest_trials"]


def manifest_trials(plan: Plan | None) -> dict[str, dict[str, Any]]:
    trials: dict[str, Any] = {}
    if plan is not None:
        for t in plan.baselines:
            trials[t.name] = {"role": "baseline", "phase": BASELINES, "varied": t.varied, "baseline": None}
        for f in plan.forks:
            trials[f.trial.name] = {
                "role": "perturbed",
                "phase": PERTURBED,
                "varied": f.trial.varied,
                "baseline": f.baseline,
                "init_epoch": f.init_epoch,
                "init_from": None,
            }
        for t in plan.independent:
            trials[t.name] = {"role": "trial", "phase": TRIALS, "varied": t.varied, "baseline": None}
    return trials


def make_manifest(
    space: SearchSpace,
    plan: Plan | None,
    root: str,
    old: dict[str, Any] | None,
    identities: dict[str, Identity] | None = None,
    extended: dict[str, tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """The manifest for this run: the current plan with each trial's identity, trials of earlier spaces
    kept (``in_space`` false), an ``extensions`` entry whenever the space added or dropped trials or
    raised ``epochs``."""
    planned = manifest_trials(plan)
    study_identity, per_trial = manifest_identity(identities or {})
    for name, record in per_trial.items():
        planned[name].update(record)
    trials = dict((old or {}).get("trials", {}))
    for name, info in trials.items():
        info["in_space"] = name in planned
    added = [n for n in planned if n not in trials]
    for name, info in planned.items():
        trials[name] = {**trials.get(name, {}), **info, "in_space": True}
    extensions = list((old or {}).get("extensions", []))
    removed = sorted(n for n, i in trials.items() if not i["in_space"])
    if old is not None and (added or extended or removed != (extensions[-1]["not_in_space"] if extensions else [])):
        entry = {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "added": added, "not_in_space": removed}
        if extended:
            entry["extended"] = {name: {"epochs": list(pair)} for name, pair in sorted(extended.items())}
        extensions.append(entry)
    return {
        "name": space.name,
        "search_space": str(Path(space.path).resolve()),
        "root": storage.redact(root),
        "layout": "one Tune experiment per study",
        "fork_from_baseline": bool(plan and plan.forks),
        "searcher": bool(space.uses_searcher),
        "metric": space.metric,
        "mode": space.mode,
        "evalsets": space.evalsets,
        "identity": study_identity if identities else (old or {}).get("identity"),
        "trials": trials,
        "extensions": extensions,
        "runs": list((old or {}).get("runs", [])),
    }
