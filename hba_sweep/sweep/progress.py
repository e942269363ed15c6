"""What the driver knows about progress beyond the searcher: which released trials Tune really started
(``status`` tells running from queued), and whether a ``--resume`` has anything left to run."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from ray.tune import Callback

from hba_sweep.artifacts import trialfiles
from hba_sweep.artifacts.manifest import Manifest, read_manifest_quietly
from hba_sweep.sweep import lock
from hba_sweep.sweep.plan import Plan
from hba_sweep.sweep.status import RUNNING_PID


class TrialStarts(Callback):
    """Marks a trial in study.json when Tune starts it on a worker (until then it waits for a slot)."""

    def __init__(self, record: Callable[[str, dict[str, Any]], None]):
        self.record = record

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        name = (trial.config or {}).get("run_name")
        if name:
            self.record(name, {RUNNING_PID: os.getpid()})


def plan_names(plan: Plan) -> list[str]:
    return [t.name for t in plan.trials]


def all_finished(plan: Plan, root: str) -> bool:
    """Whether every planned trial has its done.json on storage."""
    return all(trialfiles.read_done(trialfiles.trial_path(root, n)) is not None for n in plan_names(plan))


def record_nothing_left(root: str, count: int) -> None:
    """A --resume with nothing left: take the study's lock (a killed driver's stale one is taken over),
    note the run in study.json and give the lock back; Ray is never started."""
    held = lock.acquire(root)
    try:
        data = read_manifest_quietly(root)
        if data is not None:
            data.setdefault("runs", []).append(
                {
                    **held,
                    "resume": True,
                    "ended": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "finished": count,
                    "failed": 0,
                    "skipped": 0,
                    "interrupted": 0,
                    "nothing_left": True,
                }
            )
            Manifest(root, data).write()
    finally:
        lock.release(root, held)
