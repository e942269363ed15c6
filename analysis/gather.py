"""Gather a study: every trial, its settings, its epoch checkpoints and its training history.

Independent of the sweep's exact layout: the experiment directory (local path or pyarrow URI)
is walked for ``meta.json`` files. Each names a checkpoint (epoch, config, metrics so far).
Plain run directories (``<run>/checkpoints/epoch_<e>/``) and Tune trial directories
(``<trial>/checkpoint_00000N/``) both work. Only JSON and safetensors are read: nothing is
unpickled. A forked trial's inherited epochs point at its baseline's checkpoint of that epoch.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from typing import Any

import pyarrow.fs as pafs

from analysis.published_runs import is_published, published_trials
from analysis.records import Checkpoint, EpochEntry, Study, Trial
from hba_sweep.artifacts.checkpoint import ADAPTER_FILE, META_FILE, load_published_adapters, run_config
from hba_sweep.config import FORK_MAY_CHANGE, PATH_FIELDS
from hba_sweep.foundation.errors import CheckpointError, DataError
from hba_sweep.foundation.io_utils import file_sha256
from hba_sweep.foundation.storage import experiment_path
import os
from safetensors import SafetensorError
from safetensors.torch import load

MANIFEST = "study.json"
EPOCH_DIR = re.compile(r"^epoch_(-?\d+)$")
# Settings that do not change what a run computes up to its perturbation, plus data locations.
NOT_IDENTITY = FORK_MAY_CHANGE | set(PATH_FIELDS)
SKIP_DIRS = {"analysis", "prefix_cache"}


def open_experiment(path: str, storage: str | None = None) -> tuple[pafs.FileSystem, str]:
    """(filesystem, root) of an experiment: a local dir, a URI, or a name under ``storage``."""
    target = experiment_path(path, storage)  # the name joins a URI's path, before its ?query
    try:
        if "://" in target:
            fs, root = pafs.FileSystem.from_uri(target)
        else:
            fs, root = pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(target))
        info = fs.get_file_info(root)
    except (OSError, ValueError) as exc:
        raise DataError(f"{target}: cannot open the experiment ({exc}). Fix: give a local directory or a "
                        "pyarrow URI (s3://..., gs://..., file://...).") from None
    if info.type != pafs.FileType.Directory:
        raise DataError(f"{target}: experiment directory not found. Fix: give ray_results/<name> (or --storage URI "
                        "with the experiment name).")
    return fs, root


def read_json(fs: pafs.FileSystem, path: str) -> Any:
    with fs.open_input_stream(path) as fh:
        return json.loads(fh.read().decode("utf-8"))


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as fh:
        return fh.read()


def load_adapters(fs: pafs.FileSystem, ckpt: Checkpoint) -> dict:
    """Adapters of a checkpoint, checked against the SHA-256 in its meta.json (safetensors, no pickle);
    a published ``epoch{e}_dora_params.pth`` through ``load_published_adapters`` (weights_only)."""

    if is_published(ckpt.path):
        if file_sha256(ckpt.path) != ckpt.adapter_sha256:
            raise CheckpointError(f"{ckpt.path}: changed while analyze ran. Fix: run analyze again.")
        return load_published_adapters(ckpt.path)

    data = read_bytes(fs, posixpath.join(ckpt.path, ADAPTER_FILE))
    if ckpt.adapter_sha256 and hashlib.sha256(data).hexdigest() != ckpt.adapter_sha256:
        raise CheckpointError(f"{ckpt.path}/{ADAPTER_FILE}: does not match the hash in meta.json (truncated or "
                              "corrupted). Fix: delete this checkpoint or re-run the trial's epoch.")
    try:
        return load(data)
    except SafetensorError as exc:
        raise CheckpointError(f"{ckpt.path}/{ADAPTER_FILE}: not a safetensors file ({exc}); pickled weights are "
                              "never loaded. Fix: delete this checkpoint or re-run the trial's epoch.") from None


def _meta_files(fs: pafs.FileSystem, root: str) -> list[str]:
    selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
    paths = []
    for info in fs.get_file_info(selector):
        if info.type != pafs.FileType.File or info.base_name != META_FILE:
            continue
        rel = posixpath.relpath(info.path, root).split("/")
        if SKIP_DIRS & set(rel[:-1]) or any(part.startswith(".") for part in rel[:-1]):
            continue  # our own outputs, temp dirs of checkpoints being written
        paths.append(info.path)
    return sorted(paths)


def _trial_dir(meta_path: str) -> str:
    ckpt_dir = posixpath.dirname(meta_path)
    parent = posixpath.dirname(ckpt_dir)
    if EPOCH_DIR.match(posixpath.basename(ckpt_dir)) and posixpath.basename(parent) == "checkpoints":
        return posixpath.dirname(parent)  # a plain run directory
    return parent  # a Tune trial directory (checkpoint_00000N/)


def tune_trial_id(fs: pafs.FileSystem, trial_dir: str) -> str | None:
    """Tune's id of the trial in ``trial_dir`` (from the first line of its result.json), if it has one."""
    path = posixpath.join(trial_dir, "result.json")
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    try:
        with fs.open_input_stream(path) as fh:
            first = fh.read(1 << 16).split(b"\n", 1)[0]
        value = json.loads(first.decode("utf-8")).get("trial_id")
    except (ValueError, OSError, AttributeError):
        return None
    return str(value) if value else None


def _label(fs: pafs.FileSystem, trial_dir: str, meta: dict[str, Any]) -> str:
    """A readable name: params.json's run_name (Tune), else the run name in meta.json, else the directory."""
    params = posixpath.join(trial_dir, "params.json")
    if fs.get_file_info(params).type == pafs.FileType.File:
        try:
            name = read_json(fs, params).get("run_name")
        except (ValueError, OSError, AttributeError):
            name = None
        if name:
            return str(name)
    name = meta.get("run_name")
    if name and name != "run":
        return str(name)
    return posixpath.basename(trial_dir)


def _trial_id(fs: pafs.FileSystem, root: str, trial_dir: str) -> str:
    """Tune's trial id; else the trial directory relative to the experiment (unique per run)."""
    rel = posixpath.relpath(trial_dir, root)
    return tune_trial_id(fs, trial_dir) or (posixpath.basename(trial_dir) if rel == "." else rel)


def _identity(config: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in sorted(config.items()) if k not in NOT_IDENTITY}, sort_keys=True, default=str)


def gather(fs: pafs.FileSystem, root: str) -> Study:
    """Every trial and epoch checkpoint under ``root``; inherited epochs resolved to the baseline's."""
    trials: dict[str, Trial] = {}
    ids: dict[str, str] = {}
    skipped: list[str] = []
    for meta_path in _meta_files(fs, root):
        try:
            meta = read_json(fs, meta_path)
            epoch = int(meta["epoch"])
        except (ValueError, KeyError, TypeError, OSError):
            skipped.append(f"{meta_path}: unreadable meta.json (truncated?); checkpoint left out")
            continue
        trial_dir = _trial_dir(meta_path)
        config = run_config(meta)
        if trial_dir not in ids:
            ids[trial_dir] = _trial_id(fs, root, trial_dir)
        tid = ids[trial_dir]
        if tid not in trials:
            trials[tid] = Trial(tid, trial_dir, dict(config), label=_label(fs, trial_dir, meta))
        trial = trials[tid]
        history = list(meta.get("metrics", []))
        if len(history) >= len(trial.history):
            trial.history, trial.config = history, dict(config)
        ckpt = Checkpoint(posixpath.dirname(meta_path), epoch, meta.get("sha256", {}).get(ADAPTER_FILE, ""), config)
        trial.checkpoints[epoch] = ckpt  # (trial, epoch) deduplicated: the later path wins

    for trial in published_trials(fs, root):  # published run folders (training_res.csv + dora_params/)
        trials.setdefault(trial.trial_id, trial)
    manifest = _read_manifest(fs, root)
    _apply_manifest(trials, manifest)
    entries = _entries(trials, skipped)
    return Study(root, fs, trials, entries, manifest, skipped)


def _read_manifest(fs: pafs.FileSystem, root: str) -> dict[str, Any] | None:
    path = posixpath.join(root, MANIFEST)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    try:
        return read_json(fs, path)
    except (ValueError, OSError):
        raise DataError(f"{path}: unreadable study manifest. Fix: restore it, or move it away to analyse the "
                        "checkpoints without it.") from None


ROLES = {"baselines": "baseline", "perturbed": "perturbed", "trials": "trial"}  # manifest phase -> role


def _apply_manifest(trials: dict[str, Trial], manifest: dict[str, Any] | None) -> None:
    """Roles, baselines and status from study.json (keyed by trial name), where it lists the trial."""
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
        trial.baseline_id = base.trial_id if base else None


def _entries(trials: dict[str, Trial], skipped: list[str]) -> list[EpochEntry]:
    """One entry per (trial, epoch): own checkpoints, plus inherited epochs from the baseline."""
    baselines = {_identity(t.config): t for t in trials.values() if t.is_baseline}
    entries = []
    for trial in sorted(trials.values(), key=lambda t: t.trial_id):
        if trial.is_baseline:
            base = None
        elif trial.baseline_id is not None:
            base = trials.get(trial.baseline_id)
        else:
            base = baselines.get(_identity(trial.config))
        trial.baseline_id = base.trial_id if base else None
        for epoch, ckpt in sorted(trial.checkpoints.items()):
            entries.append(EpochEntry(trial.trial_id, epoch, False, ckpt))
        for epoch in trial.inherited_epochs:
            if epoch in trial.checkpoints:
                continue
            if base is None or epoch not in base.checkpoints:
                skipped.append(f"{trial.trial_id} epoch {epoch}: inherited from a baseline whose checkpoint is not "
                               "in this experiment; left out")
                continue
            entries.append(EpochEntry(trial.trial_id, epoch, True, base.checkpoints[epoch]))
    entries.sort(key=lambda e: (e.trial_id, e.epoch))
    return entries
