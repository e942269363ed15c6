"""Match a study's planned trials to the trials already on storage by identity, never by name alone.

On ``--resume`` (and growth) every trial folder's own record (``identity.json``, else its newest
checkpoint's config and inputs) is compared with the current plan:

- a planned trial whose identity equals a recorded one *is* that trial: it takes the recorded name, so a
  setting that gains a grid value reuses the trials that exist;
- a setting every recorded trial shares and every planned trial shares with another value (the base
  ``lr``, the backbone), an input file whose content changed, or a planned trial that would reuse a
  recorded trial's folder with another identity: refused before anything runs, each difference named;
- ``epochs`` raised: trials that ended by reaching the old last epoch are extended (their done marker is
  lifted; early-stopped and diverged ones stay as they ended); lowered, or raised under an LR schedule
  that depends on it: refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hba_sweep.artifacts import trialfiles
from hba_sweep.artifacts.identity import EXTENDS, Identity, differences, identity_key, trial_identities
from hba_sweep.artifacts.layout import DONE_FILE
from hba_sweep.foundation import storage
from hba_sweep.foundation.errors import ConfigError
from hba_sweep.sweep.plan import Plan

SCHEDULES_OVER_EPOCHS = ("cosineannealinglr", "cosineannealinglrwithwarmup")
NEW_STUDY_FIX = "give --name NEW for a study with the new settings or files, or restore them to resume this one"
MAX_SHOWN = 12


@dataclass
class Recorded:
    """A trial on storage: what it recorded it is, and its done marker if it has ended."""

    name: str
    identity: Identity
    done: dict[str, Any] | None


@dataclass
class Matching:
    """What the plan reuses: planned name -> recorded name, and the trials to extend (name -> old epochs)."""

    renamed: dict[str, str] = field(default_factory=dict)
    extend: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (old epochs, new epochs)
    notes: list[str] = field(default_factory=list)


def match_key(identity: Identity, with_inputs: bool) -> str:
    return identity.key if with_inputs else identity_key(identity.settings, {})


def recorded_trials(root: str, names: Iterable[str]) -> dict[str, Recorded]:
    """The trials among ``names`` (and the folders under ``root``) that recorded what they are."""
    out = {}
    for name in sorted(set(names) | set(storage.listdir(root))):
        path = trialfiles.trial_path(root, name)
        if not storage.is_dir(path):
            continue
        identity = trialfiles.read_identity(path)
        if identity is not None:
            out[name] = Recorded(name, identity, trialfiles.read_done(path))
    return out


def _shared(values: list[dict[str, Any]]) -> dict[str, Any]:
    """The entries every mapping has with one and the same value."""
    if not values:
        return {}
    first = values[0]
    return {k: v for k, v in first.items() if all(k in d and d[k] == v for d in values[1:])}


def _digests(identities: list[Identity]) -> list[dict[str, Any]]:
    return [{role: entry.get("sha256") for role, entry in i.inputs.items()} for i in identities]


def base_differences(recorded: list[Identity], planned: list[Identity]) -> list[str]:
    """Settings and input files the recorded trials all share and the planned ones all share otherwise."""
    old, new = _shared([i.settings for i in recorded]), _shared([i.settings for i in planned])
    lines = [f"{k}: {old[k]!r} -> {new[k]!r}" for k in sorted(old.keys() & new.keys()) if old[k] != new[k]]
    lines = [line for line in lines if line.split(":", 1)[0] not in EXTENDS]
    with_inputs = [i for i in recorded if i.inputs]
    old_in, new_in = _shared(_digests(with_inputs)), _shared(_digests(planned))
    for role in sorted(old_in.keys() & new_in.keys()):
        if old_in[role] != new_in[role]:
            before = next(i.inputs[role] for i in with_inputs)
            after = next(i.inputs[role] for i in planned)
            lines += differences(Identity({}, {role: before}), Identity({}, {role: after}))
    return lines


def _refuse(root: str, what: str, lines: list[str]) -> ConfigError:
    shown = lines[:MAX_SHOWN] + ([f"... and {len(lines) - MAX_SHOWN} more"] if len(lines) > MAX_SHOWN else [])
    return ConfigError(
        f"{storage.redact(root)}: {what}; nothing was started:\n  " + "\n  ".join(shown) + f"\nFix: {NEW_STUDY_FIX}."
    )


def _extension(rec: Recorded, new_epochs: int) -> int | None:
    """The old epochs when this finished trial is extended to ``new_epochs``; None when it stays as it ended."""
    old_epochs = rec.identity.settings.get("epochs")
    if rec.done is None or old_epochs is None or new_epochs <= old_epochs:
        return None
    reached = rec.done.get("reason") == "completed" and rec.done.get("status", "finished") == "finished"
    return int(old_epochs) if reached else None


def match_plan(root: str, plan: Plan, identities: dict[str, Identity], recorded: dict[str, Recorded]) -> Matching:
    """Match planned trials to recorded ones; raise ConfigError naming every difference that would mix."""
    if not recorded:
        return Matching()
    planned = plan.trials
    lines = base_differences([r.identity for r in recorded.values()], list(identities.values()))
    if lines:
        raise _refuse(root, "the study's settings or input files changed since its trials ran", lines)
    by_key: dict[tuple[bool, str], str] = {}
    for rec in recorded.values():
        by_key.setdefault((bool(rec.identity.inputs), match_key(rec.identity, bool(rec.identity.inputs))), rec.name)
    matching, clashes = Matching(), []
    for trial in planned:
        ident = identities[trial.name]
        found = by_key.get((True, ident.key)) or by_key.get((False, match_key(ident, False)))
        if found is not None:
            matching.renamed[trial.name] = found
            new_epochs = int(trial.config["epochs"])
            old_epochs = recorded[found].identity.settings.get("epochs")
            if old_epochs is not None and new_epochs < int(old_epochs) and recorded[found].done is not None:
                clashes.append(f"{found}: epochs: {old_epochs} -> {new_epochs} (it trained past the new last epoch)")
            elif (old := _extension(recorded[found], new_epochs)) is not None:
                if trial.config.get("lr_scheduler") in SCHEDULES_OVER_EPOCHS:
                    clashes.append(
                        f"{found}: epochs: {old} -> {new_epochs} under lr_scheduler "
                        f"{trial.config['lr_scheduler']!r}, whose schedule depends on epochs (an extended trial "
                        "would not equal one trained for the new epochs)"
                    )
                else:
                    matching.extend[found] = (old, new_epochs)
        elif trial.name in recorded:
            diff = differences(recorded[trial.name].identity, ident, extends=True)
            clashes.append(f"{trial.name}: " + "; ".join(diff or ["recorded with another identity"]))
    clashes += _double_claims(matching.renamed)
    if clashes:
        raise _refuse(root, "trials on storage differ from the trials of the same name in the search space", clashes)
    matching.notes += _notes(recorded, identities, matching)
    return matching


def _double_claims(renamed: dict[str, str]) -> list[str]:
    seen: dict[str, str] = {}
    out = []
    for planned, found in renamed.items():
        if found in seen:
            out.append(f"{found}: both {seen[found]} and {planned} of the search space are this trial")
        seen[found] = planned
    return out


def _notes(recorded: dict[str, Recorded], identities: dict[str, Identity], matching: Matching) -> list[str]:
    notes = []
    renamed = {p: r for p, r in matching.renamed.items() if p != r}
    if renamed:
        notes.append(f"{len(renamed)} trial(s) of the search space are trials on storage under their earlier names")
    if matching.extend:
        pairs = sorted(set(matching.extend.values()))
        notes.append(
            f"epochs raised: {len(matching.extend)} trial(s) that reached their last epoch continue "
            + ", ".join(f"from {old} to {new} epochs" for old, new in pairs)
        )
    versions = {r.identity.version for r in recorded.values() if r.identity.version} - {
        i.version for i in identities.values()
    }
    if versions:
        notes.append(
            f"trials on storage were made by hba_sweep {', '.join(sorted(versions))} (this is another version)"
        )
    return notes


def apply_renames(plan: Plan, renamed: dict[str, str]) -> None:
    """Give matched trials their recorded names (forks follow their baseline's)."""
    for trial in plan.trials:
        trial.name = renamed.get(trial.name, trial.name)
    for fork in plan.forks:
        fork.baseline = renamed.get(fork.baseline, fork.baseline)


def plan_identities(plan: Plan) -> dict[str, Identity]:
    trials = plan.trials
    return dict(zip([t.name for t in trials], trial_identities([t.config for t in trials]), strict=True))


def extend_trials(root: str, extend: dict[str, int]) -> None:
    """Lift the done marker of each trial to extend: it resumes from its last checkpoint."""
    for name in extend:
        storage.remove(storage.join(trialfiles.trial_path(root, name), DONE_FILE))


def manifest_identity(identities: dict[str, Identity]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """study.json's record: what every trial shares (settings, inputs, version) and per trial its key and
    the settings it does not share."""
    values = list(identities.values())
    shared = _shared([i.settings for i in values])
    inputs = values[0].inputs if values else {}
    study = {"version": values[0].version if values else "", "settings": shared, "inputs": inputs}
    per_trial = {
        name: {"identity": i.key, "settings": {k: v for k, v in i.settings.items() if k not in shared}}
        for name, i in identities.items()
    }
    return study, per_trial
