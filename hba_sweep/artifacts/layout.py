"""Where runs leave their files: the names and patterns of the three layouts the store reads.

- Ours: ``save_path/<run>/`` with ``config.yaml``, ``split.json``, ``metrics.csv``, ``run_status.json``
  and ``checkpoints/epoch_<e>/`` (``adapter.safetensors``, ``state.pt``, ``meta.json``).
- Tune's trial folders: ``<study>/<trial>/checkpoint_<NNNNNN>/`` (ours inside), ``result.json``,
  ``params.json`` and our ``done.json``; the study's manifest ``study.json`` (:mod:`.manifest`).
- The published trainer's: ``dora_params/epoch{e}_dora_params.pth``, ``training_res.csv``,
  ``training_config.yaml``, ``random_states/dataset_split_indices.pth``.

Torch-free, so that listing a study or deciding what a folder holds loads no model code.
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path

from hba_sweep.foundation import storage

# ours
ADAPTER_FILE = "adapter.safetensors"
STATE_FILE = "state.pt"
META_FILE = "meta.json"
CHECKPOINTS = "checkpoints"
EPOCH_DIR = re.compile(r"^epoch_(-?\d+)$")
# Tune's trial folders
TUNE_CHECKPOINT = re.compile(r"^checkpoint_(\d{6})$")
DONE_FILE = "done.json"  # in a trial directory: written once the trial has ended for good
IDENTITY_FILE = "identity.json"  # in a trial directory: what the trial is (artifacts/identity.py), at its start
RESULT_FILE = "result.json"
PARAMS_FILE = "params.json"
# the published trainer's
DORA_PARAMS = "dora_params"
DORA_FILE = re.compile(r"^epoch(\d+)_dora_params\.pth$")
TRAINING_RES = "training_res.csv"
RANDOM_STATES = "random_states"
SPLIT_INDICES = "dataset_split_indices.pth"


def epoch_dir(run_dir: str | os.PathLike, epoch: int) -> Path:
    """Our checkpoint of ``epoch`` in a run directory."""
    return Path(run_dir) / CHECKPOINTS / f"epoch_{epoch}"


def list_epochs(run_dir: str | os.PathLike) -> list[int]:
    """Epochs of a run directory with a complete checkpoint (meta.json present), ascending."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = (EPOCH_DIR.match(d.name) for d in root.iterdir())
    return sorted(int(m.group(1)) for m in found if m and (root / m.group(0) / META_FILE).is_file())


def published_epoch(path: str | os.PathLike) -> int | None:
    """The epoch in a published checkpoint's file name (``epoch12_dora_params.pth`` -> 12), else None."""
    found = DORA_FILE.match(posixpath.basename(str(path)))
    return int(found.group(1)) if found else None


def is_published_run(path: str | os.PathLike) -> bool:
    """Whether a local folder is a run the published trainer wrote (``dora_params/``, or its
    ``training_res.csv`` alone) rather than one of ours (which has checkpoints of its own)."""
    path = Path(path)
    if list_epochs(path):
        return False
    return (path / DORA_PARAMS).is_dir() or (path / TRAINING_RES).is_file() and not (path / CHECKPOINTS).is_dir()


def published_run_folders(root: str, fs: storage.FileSystem) -> list[str]:
    """Published run folders under ``root`` (or ``root`` itself): those holding
    ``dora_params/epoch{e}_dora_params.pth``. Local storage only (empty otherwise)."""
    if not storage.is_local(fs):
        return []
    found = {
        posixpath.dirname(posixpath.dirname(p))
        for p in storage.find_files(root, fs)
        if published_epoch(p) is not None and posixpath.basename(posixpath.dirname(p)) == DORA_PARAMS
    }
    return sorted(found)
