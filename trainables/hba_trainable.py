"""The Ray Tune function trainable: a thin wrapper around ``run_training_experiment``.

Per epoch it reports the metrics with the epoch's checkpoint (``tune.report``); on a retry it
continues from ``tune.get_checkpoint()``; a fork (``init_from``) may point at a Tune checkpoint on
any storage. In a study (``study_root``) the trial's own files decide, on every driver run: a trial
finished earlier replays its metrics (no training, no checkpoint copied); an unfinished one replays
its stored checkpoints (so Tune's history and checkpoint numbering continue where they were) and
trains on from the last; when training returns, ``done.json`` marks the trial finished. The device is the GPU Ray assigned, or the CPU (said once).
The run directory lives in a local scratch folder; its small files (metrics.csv, config.yaml,
split.json) are copied into the trial's working dir under ``run/`` and synced with it.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from hba_sweep.artifacts import trialfiles
from hba_sweep.artifacts.identity import PLANNED_IDENTITY, Identity, differences, trial_identity
from hba_sweep.config import from_dict
from hba_sweep.foundation import storage
from hba_sweep.foundation.errors import CheckpointError, ConfigError
from hba_sweep.foundation.faults import maybe_fault
from hba_sweep.foundation.safe_paths import make_dirs
from hba_sweep.perturbations import register_types
from hba_sweep.training import run_training_experiment

RUN_FILES = ("metrics.csv", "config.yaml", "split.json")
_said: set[str] = set()
CHECKPOINT_LOGGERS = ("ray.train._internal.storage", "ray.train.v2._internal.execution.storage")


def quiet_checkpoint_logs() -> None:
    """No "Checkpoint successfully created at: ..." line per epoch and trial (the table says enough)."""
    for name in CHECKPOINT_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def say_once(message: str) -> str:
    """Print a note once per worker process; return it."""
    if message not in _said:
        _said.add(message)
        print(f"[hba_sweep] {message}", flush=True)
    return message


def choose_device(requested: str, gpu_ids: list[Any], cuda_available: bool, trial: str = "") -> tuple[str, str]:
    """The device for this trial (the GPU Ray assigned, else the CPU) and the note said once about it."""
    if requested == "cpu":
        return "cpu", ""
    if gpu_ids and cuda_available:
        return "cuda:0", ""  # Ray sets CUDA_VISIBLE_DEVICES to the assigned GPU(s)
    if gpu_ids:
        return "cpu", say_once(
            f"{trial}: Ray assigned GPU id(s) {','.join(map(str, gpu_ids))} but CUDA is not "
            "available here: training on CPU."
        )
    if requested != "auto":
        return "cpu", say_once(
            f"{trial}: device={requested!r} but Ray assigned no GPU to this trial (RESOURCES "
            "has no 'gpu'): training on CPU."
        )
    return "cpu", ""


def _prune_checkpoints(checkpoint_dir: Path) -> None:
    """Delete the run's earlier epoch checkpoints: Tune has persisted them already."""
    for other in checkpoint_dir.parent.glob("epoch_*"):
        if other != checkpoint_dir and other.is_dir():
            shutil.rmtree(other, ignore_errors=True)


def replay(stored: list, with_checkpoints: bool, scratch: Path) -> str | None:
    """Report a trial's stored epochs again (its own rows only); return the local copy of the last
    checkpoint when ``with_checkpoints`` (Tune persists each again under the same name)."""
    if not stored:
        return None
    if not with_checkpoints:
        for row in stored[-1].meta.get("metrics", []):
            if not row.get("inherited"):
                tune.report({**row, "replayed": True})
        return None
    local = None
    for ckpt in stored:
        rows = [r for r in ckpt.meta.get("metrics", []) if r.get("epoch") == ckpt.epoch]
        local = storage.download_dir(ckpt.path, str(scratch / f"replay_{ckpt.index:06d}"))
        tune.report(
            {**(rows[-1] if rows else {"epoch": ckpt.epoch}), "replayed": True},
            checkpoint=tune.Checkpoint.from_directory(local),
        )
    return local


def real_paths(message: str, copies: dict[str, str]) -> str:
    """``message`` with each local copy's path replaced by the stored checkpoint it was copied from."""
    for local, stored in copies.items():
        message = message.replace(local.rstrip("/"), storage.redact(stored).rstrip("/"))
    return message


def record_identity(where: str, config: dict[str, Any], planned: dict[str, Any] | None) -> None:
    """Write the trial's identity.json, computed on this node; refuse when this node's input files are
    not the ones the driver planned the trial with (another copy of the data, a file changed since)."""
    ident = trial_identity(config)
    if planned and planned.get("key") != ident.key:
        expected = Identity(ident.settings, planned.get("inputs") or {})
        diff = differences(expected, ident) or ["the trial's identity differs"]
        raise ConfigError(
            f"trial {config.get('run_name')} on {socket.gethostname()}: its input files are not those the study "
            f"was planned with ({'; '.join(diff)}). Fix: give every node the same data files (and leave them "
            "unchanged while the study runs), then --resume."
        )
    trialfiles.write_identity(where, ident, node=socket.gethostname())


def train_hba(
    config: dict[str, Any],
    perturbations: dict | None = None,
    study_root: str | None = None,
    finished: frozenset = frozenset(),
) -> None:
    """Train one trial; ``config`` holds TrainConfig keys (init_from may be a Tune checkpoint path);
    ``perturbations`` are the user-registered types (name -> class) the search-space file defined;
    ``finished``: run names finished on storage when the driver started (they only replay)."""
    config = dict(config)
    planned = config.pop(PLANNED_IDENTITY, None)
    name = config.get("run_name")
    where = storage.join(study_root, name) if study_root and name else None
    if where is not None and name in finished:
        replay(trialfiles.checkpoints(where), False, Path("."))
        return
    register_types(perturbations or {})
    context = tune.get_context()
    # a searched trial has no planned run name: its folder is Tune's trial directory
    folder = where or (storage.join(study_root, Path(context.get_trial_dir()).name) if study_root else None)
    if folder is not None:
        record_identity(folder, config, planned)
    quiet_checkpoint_logs()

    trial = context.get_trial_name()
    gpu_ids = ray.get_gpu_ids()
    device, note = choose_device(str(config.get("device", "auto")), gpu_ids, torch.cuda.is_available(), trial)
    extra = {
        "device": device,
        "device_note": note,
        "gpu_ids": ",".join(map(str, gpu_ids)),
        "node_id": ray.get_runtime_context().get_node_id(),
    }
    artifacts = Path(os.getcwd()) / "run"

    last = {"epoch": None}

    def report(metrics: dict, checkpoint_dir: str) -> None:
        maybe_fault(trial, int(metrics["epoch"]))  # tests only (hba_sweep/foundation/faults.py)
        last["epoch"] = int(metrics["epoch"])
        run = Path(checkpoint_dir).parent.parent
        make_dirs(artifacts, root=artifacts.parent)  # a `run` linked elsewhere is refused, not written through
        for name in RUN_FILES:
            if (run / name).is_file():
                shutil.copy2(run / name, artifacts / name)
        tune.report({**metrics, **extra}, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir))
        _prune_checkpoints(Path(checkpoint_dir))

    values = {**config, "device": device, "run_name": "run", "progress": False}
    with ExitStack() as stack:
        values["save_path"] = stack.enter_context(tempfile.TemporaryDirectory(prefix="hba_trial_"))
        resume = tune.get_checkpoint()
        on_storage = trialfiles.checkpoints(where) if resume is None and where is not None else []
        stored = replay(on_storage, True, Path(values["save_path"])) if on_storage else None
        copies: dict[str, str] = {}  # local copy -> the stored checkpoint (for messages)
        if resume is not None:
            values["resume_from"] = stack.enter_context(resume.as_directory())
            copies[values["resume_from"]] = resume.path
        elif stored is not None:
            values["resume_from"] = stored
            copies[stored] = on_storage[-1].path
        if values.get("resume_from"):
            values["init_from"] = values["init_epoch"] = None
        elif values.get("init_from"):
            values["init_from"] = stack.enter_context(tune.Checkpoint(values["init_from"]).as_directory())
            copies[values["init_from"]] = str(config["init_from"])
        cfg = from_dict(values, source=f"trial {trial}")
        try:
            summary = run_training_experiment(cfg, report=report) or {}
        except CheckpointError as exc:  # name the stored checkpoint, not the local copy that is about to vanish
            raise CheckpointError(real_paths(str(exc), copies)) from None
    if folder is not None:
        epoch = summary.get("epoch", last["epoch"])
        trialfiles.write_done(
            folder,
            epoch,
            cfg.epochs,
            trialfiles.end_reason(epoch, cfg.epochs),
            **{k: summary[k] for k in ("status", "window_completed") if k in summary},
        )
