"""``status <study dir>``: the driver (running / gone) and every trial's state, from the study's own files.

A trial is *finished* or *stopped early* when its ``done.json`` says so; *failed* / *skipped* /
*started* come from the manifest (``study.json``, written by the driver as trials start and end);
a started trial is *running* once Tune started it under the driver that holds ``driver.lock`` (else
*queued*: released, waiting for a slot), and *interrupted* when that driver no longer runs.
Trials an edited search space no longer has are listed as *not in the current space*. A plain
Tune experiment (no manifest) is read through ``ray.tune.ExperimentAnalysis``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hba_sweep.artifacts import trialfiles
from hba_sweep.artifacts.manifest import MANIFEST, read_manifest
from hba_sweep.foundation.errors import ConfigError
from hba_sweep.sweep import lock

RUNNING_PID = "running_pid"  # study.json: the pid of the driver under which Tune started the trial (progress.py)
TUNE_STATES = {
    "TERMINATED": "finished",
    "RUNNING": "running",
    "ERROR": "failed",
    "PENDING": "pending",
    "PAUSED": "paused",
}


@dataclass
class TrialStatus:
    name: str
    phase: str
    state: str
    last_epoch: int | None = None
    note: str = ""


def _state(root: Path, name: str, info: dict, driver: str, held: dict | None = None) -> TrialStatus:
    path = str(root / name)
    done = trialfiles.read_done(path)  # a finished trial's record names its last epoch: no checkpoint listing
    if done is not None:
        last = done["last_epoch"]
    else:
        stored = trialfiles.checkpoints(path)
        last = stored[-1].epoch if stored else None
    row = TrialStatus(
        name=name,
        phase=info.get("role", info.get("phase", "")),
        state="pending",
        last_epoch=last,
        note=info.get("skip_reason", ""),
    )
    if done is not None:
        row.state = "finished" if done.get("reason") == "completed" else "stopped early"
        row.note = "" if row.state == "finished" else str(done.get("reason"))
        if done.get("status") == "window_incomplete":
            row.note += "; its perturbation window did not complete"
    elif info.get("status") in ("failed", "skipped"):
        row.state = info["status"]
    elif info.get("status") == "started":  # released to Tune; running once Tune started it under this driver
        if driver == "running":
            row.state = "running" if info.get(RUNNING_PID) == (held or {}).get("pid") else "queued"
        else:
            row.state = "interrupted" if driver != "unknown" else "started"
    if not info.get("in_space", True):
        row.note = "not in the current space" + (f"; {row.note}" if row.note else "")
        if row.state == "pending":
            row.state = "not in space"
    return row


def driver_line(root: Path, manifest: dict, held: dict | None) -> str:
    """Who runs the study now: from ``held`` (driver.lock as read; pid alive on this host?) and the
    manifest's runs."""
    state = lock.driver_state(held)
    runs = manifest.get("runs") or [{}]
    if state == "running":
        return f"driver: running (pid {held['pid']} on {held['host']} since {held['started']})"
    if state == "gone":
        return (
            f"driver: gone (pid {held['pid']} on {held['host']}, started {held['started']}, no longer runs: "
            "it was killed). Fix: run again with --resume"
        )
    if state == "unknown":
        return (
            f"driver: pid {held['pid']} on {held['host']} since {held['started']} (another host: cannot check "
            "from here)"
        )
    last = runs[-1]
    if last.get("ended"):
        return f"driver: not running (last run ended {last['ended']})"
    return "driver: not running (the last run did not end cleanly). Fix: run again with --resume"


def _tune_only(root: Path) -> list[TrialStatus]:
    """A plain Tune experiment: trial states through Tune's public ExperimentAnalysis."""
    from ray.tune import ExperimentAnalysis  # reason: the `status` parser imports this module: --help stays Ray-free

    try:
        analysis = ExperimentAnalysis(str(root))
    except Exception as exc:
        raise ConfigError(
            f"{root}: neither a study ({MANIFEST}) nor a readable Tune experiment ({exc}). "
            "Fix: give the directory `run` printed."
        ) from None
    rows = []
    for trial in analysis.trials:
        last = (trial.last_result or {}).get("epoch")
        rows.append(
            TrialStatus(
                name=Path(trial.path).name, phase="", state=TUNE_STATES.get(trial.status, trial.status), last_epoch=last
            )
        )
    return sorted(rows, key=lambda r: r.name)


def read_study(path: str | os.PathLike) -> tuple[str, list[TrialStatus]]:
    """(the driver line, every trial of the study with its state)."""
    root = Path(path)
    if not root.is_dir():
        raise ConfigError(
            f"{root}: no such experiment directory. Fix: give ray_results/<NAME> "
            "(the --storage path and the search space's NAME)."
        )
    manifest = read_manifest(str(root))
    if manifest is None:
        return "driver: (no study manifest)", _tune_only(root)
    trials = manifest.get("trials", {})
    held = lock.read_lock(str(root))  # read once: the rows and the driver line agree
    driver = lock.driver_state(held)
    rows = [_state(root, name, info, driver, held) for name, info in trials.items()]
    if manifest.get("searcher"):
        known = {r.name for r in rows}
        rows += [r for r in _tune_only(root) if r.name not in known] if any(root.glob("experiment_state-*")) else []
    return driver_line(root, manifest, held), rows


def study_status(path: str | os.PathLike) -> list[TrialStatus]:
    """Every trial of a study (or of a plain Tune experiment) with its state."""
    return read_study(path)[1]


def format_status(rows: list[TrialStatus], driver: str = "") -> str:
    """The driver line, a table and a count per state."""
    width = max([len(r.name) for r in rows] + [5])
    lines = [driver] if driver else []
    lines.append(f"{'trial':<{width}}  {'role':<10} {'state':<13} last epoch")
    for r in rows:
        epoch = "-" if r.last_epoch is None else str(r.last_epoch)
        lines.append(f"{r.name:<{width}}  {r.phase:<10} {r.state:<13} {epoch}" + (f"  ({r.note})" if r.note else ""))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    lines.append(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + f" ({len(rows)} trials)")
    return "\n".join(lines)


def identity_lines(path: str | os.PathLike) -> list[str]:
    """``status --verbose``: what the study's trials are (study.json's identity record): the product version,
    the settings and input files every trial shares, and per trial its identity key and own settings."""
    manifest = read_manifest(str(path)) or {}
    study = manifest.get("identity")
    if not isinstance(study, dict):
        return ["identity: not recorded (a study started before trials recorded their identity)"]
    lines = [f"identity (hba_sweep {study.get('version', '?')}):", "  settings every trial shares:"]
    lines += [f"    {k}: {v!r}" for k, v in sorted((study.get("settings") or {}).items())]
    lines.append("  input files (sha256):")
    for role, entry in sorted((study.get("inputs") or {}).items()):
        files = f", {entry['files']} files" if "files" in entry else ""
        lines.append(f"    {role}: {entry.get('path')} ({str(entry.get('sha256'))[:16]}{files})")
    lines.append("  trials (identity key: own settings):")
    for name, info in sorted((manifest.get("trials") or {}).items()):
        own = ", ".join(f"{k}={v!r}" for k, v in sorted((info.get("settings") or {}).items()))
        lines.append(f"    {name}  {info.get('identity', '-')}: {own or '-'}")
    return lines
