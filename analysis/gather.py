"""Gather a study: every trial, its settings, its epoch checkpoints and its training history.

Independent of the sweep's exact layout: the experiment directory (local path or pyarrow URI)
is walked for ``meta.json`` files (read by :mod:`hba_sweep.artifacts.meta`). Each names a checkpoint
(epoch, config, metrics so far). Plain run directories (``<run>/checkpoints/epoch_<e>/``) and Tune
trial directories (``<trial>/checkpoint_00000N/``) both work. Only JSON is read here; the adapters are
loaded by :func:`hba_sweep.artifacts.checkpoint.load_adapters` when evaluated (nothing is unpickled). A forked trial's inherited epochs point at its baseline's checkpoint of that epoch.
"""

from __future__ import annotations

import posixpath
from typing import Any

from analysis import integrity
from analysis.published_runs import published_trials
from analysis.records import Checkpoint, EpochEntry, Study, Trial
from hba_sweep.artifacts.layout import ADAPTER_FILE, CHECKPOINTS, EPOCH_DIR, META_FILE, PARAMS_FILE
from hba_sweep.artifacts.manifest import ANALYZE_FIX, read_manifest
from hba_sweep.artifacts.meta import read_meta
from hba_sweep.artifacts.trialfiles import tune_trial_id
from hba_sweep.foundation import storage as store
from hba_sweep.foundation.errors import CheckpointError, DataError
from hba_sweep.foundation.storage import FileSystem, experiment_path

SKIP_DIRS = {"analysis", "prefix_cache"}


def open_experiment(path: str, storage: str | None = None) -> tuple[FileSystem, str]:
    """(filesystem, root) of an experiment: a local dir, a URI, or a name under ``storage``."""
    target = experiment_path(path, storage)  # the name joins a URI's path, before its ?query
    try:
        fs, root = store.locate(target)
        found = store.is_dir(root, fs)
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{target}: cannot open the experiment ({exc}). Fix: give a local directory or a "
            "pyarrow URI (s3://..., gs://..., file://...)."
        ) from None
    if not found:
        raise DataError(
            f"{target}: experiment directory not found. Fix: give ray_results/<name> (or --storage URI "
            "with the experiment name)."
        )
    return fs, root


def _walk(fs: FileSystem, root: str) -> tuple[list[str], list[str]]:
    """The meta.json files under ``root`` and the folders holding a study.json."""
    paths, studies = [], []
    for path in store.find_files(root, fs):
        name = posixpath.basename(path)
        if name != META_FILE and not integrity.is_manifest(path):
            continue
        rel = posixpath.relpath(path, root).split("/")
        if SKIP_DIRS & set(rel[:-1]) or any(part.startswith(".") for part in rel[:-1]):
            continue  # our own outputs, temp dirs of checkpoints being written
        (paths if name == META_FILE else studies).append(path if name == META_FILE else posixpath.dirname(path))
    return sorted(paths), sorted(studies)


def _trial_dir(meta_path: str) -> str:
    ckpt_dir = posixpath.dirname(meta_path)
    parent = posixpath.dirname(ckpt_dir)
    if EPOCH_DIR.match(posixpath.basename(ckpt_dir)) and posixpath.basename(parent) == CHECKPOINTS:
        return posixpath.dirname(parent)  # a plain run directory
    return parent  # a Tune trial directory (checkpoint_00000N/)


def _label(fs: FileSystem, trial_dir: str, meta: dict[str, Any]) -> str:
    """A readable name: params.json's run_name (Tune), else the run name in meta.json, else the directory."""
    params = posixpath.join(trial_dir, PARAMS_FILE)
    if store.is_file(params, fs):
        try:
            name = store.read_json(params, fs).get("run_name")
        except (ValueError, OSError, AttributeError):
            name = None
        if name:
            return str(name)
    name = meta.get("run_name")
    if name and name != "run":
        return str(name)
    return posixpath.basename(trial_dir)


def _trial_id(fs: FileSystem, root: str, trial_dir: str) -> str:
    """Tune's trial id; else the trial directory relative to the experiment (unique per run)."""
    rel = posixpath.relpath(trial_dir, root)
    return tune_trial_id(trial_dir, fs) or (posixpath.basename(trial_dir) if rel == "." else rel)


def gather(fs: FileSystem, root: str, pool_studies: bool = False, shown: str | None = None) -> Study:
    """Every trial and epoch checkpoint under ``root``; inherited epochs resolved to the baseline's.

    Trials of several studies are refused unless ``pool_studies`` (``shown``: ``root`` as the user named it);
    study.json's baseline links are checked against the trials' records; duplicates are left out."""
    root = root.rstrip("/") or root
    meta_files, study_dirs = _walk(fs, root)
    trials: dict[str, Trial] = {}
    ids: dict[str, str] = {}
    skipped: list[str] = []
    for meta_path in meta_files:
        try:
            meta = read_meta(posixpath.dirname(meta_path), fs)
            epoch = int(meta["epoch"])
        except (CheckpointError, ValueError, KeyError, TypeError, OSError):
            skipped.append(f"{meta_path}: unreadable meta.json (truncated?); checkpoint left out")
            continue
        trial_dir = _trial_dir(meta_path)
        config = meta["config"]
        if trial_dir not in ids:
            tid = _trial_id(fs, root, trial_dir)
            taken = tid in trials  # a copy of a study next to it (pooled): the same Tune trial ids
            ids[trial_dir] = posixpath.relpath(trial_dir, root) if taken else tid
        tid = ids[trial_dir]
        if tid not in trials:
            trials[tid] = Trial(tid, trial_dir, dict(config), label=_label(fs, trial_dir, meta))
        trial = trials[tid]
        history = list(meta.get("metrics", []))
        if len(history) >= len(trial.history):
            trial.history, trial.config = history, dict(config)
            integrity.record_trial_files(trial, meta)
        ckpt = Checkpoint(posixpath.dirname(meta_path), epoch, meta.get("sha256", {}).get(ADAPTER_FILE, ""), config)
        trial.checkpoints[epoch] = ckpt  # (trial, epoch) deduplicated: the later path wins

    for trial in published_trials(fs, root):  # published run folders (training_res.csv + dora_params/)
        trials.setdefault(trial.trial_id, trial)
    if not pool_studies:
        folders = {_trial_dir(m) for m in meta_files} | {t.directory for t in trials.values()}
        integrity.check_one_study(root, shown or root, sorted(folders), study_dirs)
    for trial in trials.values():
        trial.study_dir = integrity.nearest_study(trial.directory, study_dirs)
    manifests = {s: read_manifest(s, fs, error=DataError, fix=ANALYZE_FIX) for s in study_dirs}
    for where, manifest in manifests.items():
        _apply_manifest({k: t for k, t in trials.items() if t.study_dir == where}, manifest, f"{where}/study.json")
    duplicates = integrity.drop_duplicates(trials)
    entries = _entries(trials, skipped)
    manifest = manifests.get(root) or next((m for m in manifests.values() if m), None)
    return Study(root, fs, trials, entries, manifest, skipped, duplicates)


ROLES = {"baselines": "baseline", "perturbed": "perturbed", "trials": "trial"}  # manifest phase -> role


def _apply_manifest(trials: dict[str, Trial], manifest: dict[str, Any] | None, where: str = "study.json") -> None:
    """Roles, baselines and status from study.json (``where``; keyed by trial name), where it lists the
    trial; each baseline link checked against the two trials' own records."""
    planned = (manifest or {}).get("trials") or {}
    by_label = {t.label: t for t in trials.values()}
    for trial in trials.values():
        entry = planned.get(trial.label)
        if not isinstance(entry, dict):
            continue
        role = entry.get("role") or ROLES.get(str(entry.get("phase", "")).split("_")[0])
        if entry.get("baseline"):
            trial.role = "perturbed"
        elif role == "baseline":
            trial.role = "baseline"
        # otherwise (independent trials) the role follows the config, the baseline the settings
        trial.status = entry.get("status")
        trial.note = entry.get("skip_reason") or entry.get("reason") or entry.get("note")
        base = by_label.get(entry.get("baseline") or "")
        if base is not None:
            integrity.check_link(trial, base, where)
        trial.baseline_id = base.trial_id if base else None


def _entries(trials: dict[str, Trial], skipped: list[str]) -> list[EpochEntry]:
    """One entry per (trial, epoch): own checkpoints, plus inherited epochs from the baseline."""
    baselines = {integrity.pairing_key(t): t for t in trials.values() if t.is_baseline}
    entries = []
    for trial in sorted(trials.values(), key=lambda t: t.trial_id):
        if trial.is_baseline:
            base = None
        elif trial.baseline_id is not None:
            base = trials.get(trial.baseline_id)
        else:
            base = baselines.get(integrity.pairing_key(trial))
        trial.baseline_id = base.trial_id if base else None
        for epoch, ckpt in sorted(trial.checkpoints.items()):
            entries.append(EpochEntry(trial.trial_id, epoch, False, ckpt))
        for epoch in trial.inherited_epochs:
            if epoch in trial.checkpoints:
                continue
            if base is None or epoch not in base.checkpoints:
                skipped.append(
                    f"{trial.trial_id} epoch {epoch}: inherited from a baseline whose checkpoint is not "
                    "in this experiment; left out"
                )
                continue
            entries.append(EpochEntry(trial.trial_id, epoch, True, base.checkpoints[epoch]))
    entries.sort(key=lambda e: (e.trial_id, e.epoch))
    return entries
