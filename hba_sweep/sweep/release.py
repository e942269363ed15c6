"""Dependency-aware release of a study's trials, as a Ray Tune ``Searcher``.

Tune asks ``suggest`` for the next trial whenever a slot is free. The searcher answers, in this
order: trials already finished on storage (a no-op that replays their metrics, so Tune's table
and state list the whole study), baselines and trials that need nothing, forks at epoch 0, then
every fork whose baseline has reported and checkpointed epoch ``perturb_epoch - 1`` (lowest
epoch first: the longest trials start first). It returns None while forks wait (Tune asks again)
and ``Searcher.FINISHED`` once every trial is suggested or skipped. A fork whose baseline failed,
or ended (early stopping, scheduler) before the epoch it needs, is skipped with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ray.tune.search import Searcher

from hba_sweep.artifacts import trialfiles
from hba_sweep.foundation import storage
from hba_sweep.foundation.faults import kill_point


@dataclass
class Planned:
    """One trial of the study: its config, and for a fork its baseline and the epoch it starts after."""

    name: str
    config: dict[str, Any]
    baseline: str | None = None
    init_epoch: int | None = None  # None: trains from scratch

    @property
    def waits(self) -> bool:
        return self.baseline is not None and self.init_epoch is not None


Record = Callable[[str, dict[str, Any]], None]


def ended_how(done: dict[str, Any]) -> str:
    """How a trial ended, in words, from its done marker."""
    status, reason = done.get("status"), str(done.get("reason") or "ended")
    if status == "diverged":
        return "diverged: a non-finite loss"
    if reason == "completed":
        return f"it reached its last epoch of epochs={done.get('epochs')}"
    return reason


class StudySearcher(Searcher):
    """Suggests the planned trials of one study run; state comes from storage, then from Tune's events."""

    def __init__(
        self,
        planned: list[Planned],
        root: str,
        finished: set[str],
        record: Record | None = None,
        metric: str | None = None,
        mode: str | None = None,
    ):
        super().__init__(metric=metric, mode=mode)
        self.root = root
        self.planned = {p.name: p for p in planned}
        self.finished = set(finished)
        self.record = record or (lambda name, fields: None)
        self.suggested: dict[str, str] = {}  # run name -> Tune trial id
        self.by_id: dict[str, str] = {}
        self.skipped: dict[str, str] = {}
        self.failed: set[str] = set()
        self.ended: dict[str, int | None] = {}  # baseline -> last epoch, once it ended without error
        self.why: dict[str, str] = {}  # baseline -> how it ended (done.json's reason)
        self.epochs: dict[str, dict[int, str]] = {}  # baseline -> epoch -> checkpoint storage path
        bases = {p.baseline for p in planned if p.waits}
        for name in bases:
            path = trialfiles.trial_path(root, name)
            self.epochs[name] = {c.epoch: c.path for c in trialfiles.checkpoints(path)}
            done = trialfiles.read_done(path) if name in self.finished else None
            if done is not None:
                self.ended[name], self.why[name] = done.get("last_epoch"), ended_how(done)
        self.order = self._order(planned)

    def _order(self, planned: list[Planned]) -> list[str]:
        def key(p: Planned) -> tuple:
            return (p.name not in self.finished, p.waits, p.init_epoch if p.waits else -1)

        return [p.name for p in sorted(planned, key=key)]  # stable: plan order within a group

    # ---- Tune's Searcher interface ------------------------------------------------------
    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        self._metric, self._mode = metric or self._metric, mode or self._mode
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        for name in self.order:
            if name in self.suggested or name in self.skipped:
                continue
            config = self._ready(self.planned[name])
            if config is None:
                continue
            self.suggested[name], self.by_id[trial_id] = trial_id, name
            if name not in self.finished:
                self.record(
                    name,
                    {
                        "status": "started",
                        "tune_trial_id": trial_id,
                        **(
                            {"init_from": storage.redact(config["init_from"]), "init_epoch": config["init_epoch"]}
                            if config.get("init_from")
                            else {}
                        ),
                    },
                )
            kill_point("suggested")
            return config
        if all(n in self.suggested or n in self.skipped for n in self.order):
            return Searcher.FINISHED
        return None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        name = self.by_id.get(trial_id)
        epoch, ckpt = result.get("epoch"), result.get("checkpoint_dir_name")
        if name in self.epochs and epoch is not None and ckpt:
            self.epochs[name][int(epoch)] = storage.join(self.root, name, ckpt)
        kill_point("result")

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        name = self.by_id.get(trial_id)
        if name is None or name in self.finished:
            return
        if error:
            self.failed.add(name)
            self.record(name, {"status": "failed"})
            return
        path = trialfiles.trial_path(self.root, name)
        done = trialfiles.read_done(path)
        if done is None:  # the trainable did not return: Tune's scheduler or a stopper ended it
            last = (result or {}).get("epoch")
            done = trialfiles.write_done(
                path, last, self.planned[name].config.get("epochs"), f"stopped by the scheduler after epoch {last}"
            )
        self.ended[name], self.why[name] = done.get("last_epoch"), ended_how(done)
        self.finished.add(name)
        self.record(name, {"status": "done", "reason": done.get("reason")})
        kill_point("trial_complete")

    def save(self, checkpoint_path: str) -> None:
        """Tune saves searcher state with its experiment state; ours is rebuilt from storage on every
        run, so this records what was released (for inspection) and restore ignores it."""
        with open(checkpoint_path, "w") as fh:
            json.dump({"suggested": self.suggested, "skipped": self.skipped, "failed": sorted(self.failed)}, fh)

    def restore(self, checkpoint_path: str) -> None:
        return None

    # ---- the dependency rule ------------------------------------------------------------
    def _ready(self, p: Planned) -> dict[str, Any] | None:
        """The trial's config if it can start now; None while it waits (or once it is skipped)."""
        if not p.waits or p.name in self.finished:
            return dict(p.config)
        path = self.epochs.get(p.baseline, {}).get(p.init_epoch)
        if path is not None:
            return {**p.config, "init_from": path, "init_epoch": p.init_epoch}
        reason = None
        if p.baseline in self.failed:
            reason = f"baseline {p.baseline} failed"
        elif p.baseline in self.ended:
            last = self.ended[p.baseline]
            reason = (
                f"baseline {p.baseline} ended after epoch {last} ({self.why.get(p.baseline, 'ended')}), before "
                f"epoch {p.init_epoch} that this fork starts from; not trained from scratch"
            )
        elif p.baseline not in self.planned:
            reason = f"baseline {p.baseline} is not in this study"
        if reason is not None:
            self.skipped[p.name] = reason
            self.record(p.name, {"status": "skipped", "skip_reason": reason})
        return None
