"""Group trials into baselines and forks (roles in one study; release.py decides when each starts).

Trials that differ only in perturbation settings share one baseline (``perturb_type: none``).
Each baseline trains once; every perturbed trial with ``perturb_epoch = e > 0`` starts from its
baseline's checkpoint after epoch ``e - 1`` (``init_from``/``init_epoch``) as soon as it exists;
``perturb_epoch = 0`` trains from scratch, which is the same state. The names ``baselines`` /
``perturbed`` / ``trials`` survive as the manifest's ``phase`` (role) values.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from hba_sweep.config.train_config import PERTURB_FIELDS
from hba_sweep.sweep.expand import Trial
from hba_sweep.sweep.naming import baseline_config, name_trials

BASELINES, PERTURBED, TRIALS = "baselines", "perturbed", "trials"


@dataclass
class Fork:
    """A perturbed trial and where it starts: its baseline's state after ``init_epoch`` (None: scratch)."""

    trial: Trial
    baseline: str
    init_epoch: int | None


@dataclass
class Plan:
    """Phases in order: each a list of trials; forks say which baseline epoch each perturbed trial needs."""

    baselines: list[Trial] = field(default_factory=list)
    forks: list[Fork] = field(default_factory=list)
    independent: list[Trial] = field(default_factory=list)  # FORK_FROM_BASELINE = False, or a searcher

    @property
    def phases(self) -> list[str]:
        if self.independent:
            return [TRIALS]
        return [p for p, items in ((BASELINES, self.baselines), (PERTURBED, self.forks)) if items]

    @property
    def trials(self) -> list[Trial]:
        """Every planned trial: baselines, independent trials, then the forks' trials."""
        return [*self.baselines, *self.independent, *(f.trial for f in self.forks)]

    @property
    def total(self) -> int:
        return len(self.baselines) + len(self.forks) + len(self.independent)


GROUP_SKIP = frozenset(PERTURB_FIELDS) | {"init_from", "init_epoch", "run_name"}


@functools.lru_cache(maxsize=16)
def _grouped(keys: tuple[str, ...]) -> tuple[str, ...]:
    """The keys a group shares, sorted, for configs of this key order (a grid's configs share one)."""
    return tuple(sorted(k for k in keys if k not in GROUP_SKIP))


def group_key(config: dict[str, Any]) -> tuple:
    """Everything but the perturbation settings (and the fork source): sorted ``(key, repr(value))`` pairs."""
    keys = _grouped(tuple(config))
    return tuple((k, repr(config[k])) for k in keys)


def make_plan(trials: list[Trial], fork_from_baseline: bool) -> Plan:
    """Split trials into baselines (one per group, reusing a grid's own 'none' trials) and forks."""
    if not fork_from_baseline:
        return Plan(independent=list(trials))
    baselines: dict[tuple, Trial] = {}
    baseline_of: list[Trial] = [None] * len(trials)  # type: ignore[list-item]  # each set below
    # one per group, in the order of the grid's own 'none' trials first; its varied values are the
    # group's, not the perturbation settings of whichever trial came first (baseline_config resets those)
    for index in sorted(range(len(trials)), key=lambda i: trials[i].config["perturb_type"] != "none"):
        trial, key = trials[index], group_key(trials[index].config)  # one key per trial, kept per group
        if key not in baselines:
            varied = {k: v for k, v in trial.varied.items() if k not in PERTURB_FIELDS}
            baselines[key] = Trial(name="", config=baseline_config(trial.config), varied=varied)
        baseline_of[index] = baselines[key]
    base_list = list(baselines.values())
    name_trials(base_list)
    _keep_unique(base_list, [t for t in trials if t.config["perturb_type"] != "none"])
    forks = []
    for trial, baseline in zip(trials, baseline_of, strict=True):
        if trial.config["perturb_type"] == "none":
            continue
        epoch = trial.config["perturb_epoch"]
        forks.append(Fork(trial=trial, baseline=baseline.name, init_epoch=epoch - 1 if epoch > 0 else None))
    return Plan(baselines=base_list, forks=forks)


def _keep_unique(baselines: list[Trial], perturbed: list[Trial]) -> None:
    """Baseline names must not clash with perturbed names (both phases live in one experiment)."""
    taken = {t.name for t in perturbed}
    for base in baselines:
        if base.name in taken:
            base.name = f"{base.name}_base"
