"""``status <experiment dir>``: per trial done / running / failed / pending, with its last epoch.

Reads the study manifest (planned trials, including phases not started yet) and each phase's
Tune experiment state. A plain Tune experiment directory (no manifest) works too.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from pathlib import Path

from hba_sweep.errors import ConfigError
from hba_sweep.sweep.storage import MANIFEST

STATES = {"TERMINATED": "done", "RUNNING": "running", "ERROR": "failed", "PENDING": "pending", "PAUSED": "paused"}


@dataclass
class TrialStatus:
    name: str
    phase: str
    state: str
    last_epoch: int | None = None
    note: str = ""


def _phase_trials(exp_dir: Path) -> dict[str, TrialStatus]:
    """Trials recorded in one Tune experiment's state file (the newest)."""
    states = sorted(glob.glob(str(exp_dir / "experiment_state-*.json")))
    if not states:
        return {}
    data = json.loads(Path(states[-1]).read_text())
    out = {}
    for entry in data.get("trial_data", []):
        meta = json.loads(entry[0]) if isinstance(entry, (list, tuple)) else entry
        name = meta.get("custom_dirname") or meta.get("trial_id")
        run_meta = json.loads(entry[1]) if isinstance(entry, (list, tuple)) and len(entry) > 1 else {}
        state = STATES.get(meta.get("status", ""), str(meta.get("status", "")).lower())
        out[name] = TrialStatus(name=name, phase=exp_dir.name, state=state,
                                last_epoch=_last_epoch(exp_dir / name, run_meta))
    return out


def _last_epoch(trial_dir: Path, run_meta: dict) -> int | None:
    last = (run_meta.get("last_result") or {}).get("epoch")
    if last is not None:
        return int(last)
    result = trial_dir / "result.json"
    if result.is_file():
        lines = [line for line in result.read_text().splitlines() if line.strip()]
        if lines:
            return json.loads(lines[-1]).get("epoch")
    return None


def study_status(path: str | os.PathLike) -> list[TrialStatus]:
    """Every trial of a study (or of one Tune experiment) with its state."""
    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"{root}: no such experiment directory. Fix: give ray_results/<NAME> "
                          "(the --storage path and the search space's NAME).")
    manifest_file = root / MANIFEST
    if not manifest_file.is_file():
        found = _phase_trials(root)
        if not found:
            raise ConfigError(f"{root}: neither a study ({MANIFEST}) nor a Tune experiment (experiment_state-*.json). "
                              "Fix: give the directory `run` printed.")
        return sorted(found.values(), key=lambda t: t.name)
    manifest = json.loads(manifest_file.read_text())
    seen: dict[str, TrialStatus] = {}
    for phase in manifest.get("phases", []):
        seen.update(_phase_trials(root / phase))
    rows = []
    for name, info in manifest.get("trials", {}).items():
        row = seen.pop(name, None) or TrialStatus(name=name, phase=info["phase"], state="pending")
        row.note = info.get("note", "")
        rows.append(row)
    return rows + sorted(seen.values(), key=lambda t: t.name)  # searcher trials are not in the plan


def format_status(rows: list[TrialStatus]) -> str:
    """A table and a count per state."""
    width = max([len(r.name) for r in rows] + [5])
    lines = [f"{'trial':<{width}}  {'phase':<10} {'state':<8} last epoch"]
    for r in rows:
        epoch = "-" if r.last_epoch is None else str(r.last_epoch)
        lines.append(f"{r.name:<{width}}  {r.phase:<10} {r.state:<8} {epoch}" + (f"  ({r.note})" if r.note else ""))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    lines.append(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + f" ({len(rows)} trials)")
    return "\n".join(lines)
