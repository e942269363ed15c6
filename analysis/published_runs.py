"""Published run folders as trials of a study, so ``analyze`` gives their tables and figures too.

A published run folder holds ``training_res.csv`` and ``dora_params/epoch{e}_dora_params.pth``
(read by :mod:`hba_sweep.artifacts.published`); its settings come from the published ``training_config.yaml``
found in the folder or its parent (the model layout, seed and perturbation window). Epochs are the
run's own (the published fork's CSV starts at its window; rows before it are dropped by the
own-epoch rule anyway). Checkpoints are keyed by the SHA-256 of the ``.pth`` file, read with
``torch.load(weights_only=True)``. Local folders only.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from analysis.records import Checkpoint, Trial
from hba_sweep.foundation.errors import DataError
from hba_sweep.foundation.io_utils import file_sha256
from hba_sweep.config import from_dict
from hba_sweep.artifacts.published import PublishedRun
from hba_sweep.foundation.yaml_io import read_yaml

# hba_sweep.artifacts.published's file pattern and folder, repeated so that listing a study does not load torch
DORA_FILE = re.compile(r"^epoch(\d+)_dora_params\.pth$")
DORA_PARAMS = "dora_params"
# published training_config.yaml key -> our config key (the model layout and the trial's identity)
CONFIG_KEYS = {"clip_hba_backbone": "backbone", "vision_layers": "vision_layers",
               "transformer_layers": "transformer_layers", "rank": "rank", "random_seed": "random_seed",
               "perturb_type": "perturb_type", "perturb_epoch": "perturb_epoch", "perturb_length": "perturb_length",
               "perturb_seed": "perturb_seed", "lr": "lr", "batch_size": "batch_size",
               "train_portion": "train_portion", "max_duration": "epochs",
               "pretrained": "pretrained"}  # not a published key (they always use openai): for other weights


def run_folders(fs: pafs.FileSystem, root: str) -> list[str]:
    """Folders under ``root`` (or ``root`` itself) holding ``dora_params/epoch{e}_dora_params.pth``."""
    if not isinstance(fs, pafs.LocalFileSystem):
        return []
    found = set()
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)):
        if info.type == pafs.FileType.File and DORA_FILE.match(info.base_name):
            folder = posixpath.dirname(info.path)
            if posixpath.basename(folder) == DORA_PARAMS:
                found.add(posixpath.dirname(folder))
    return sorted(found)


def _config_file(run: Path) -> Path | None:
    for folder in (run, run.parent):
        for path in sorted(folder.glob("*.y*ml")):
            try:
                raw = read_yaml(path, DataError)
            except DataError:  # not a readable YAML mapping: not the run's config
                continue
            if isinstance(raw, dict) and "clip_hba_backbone" in raw:
                return path
    return None


def run_config(run: Path) -> dict[str, Any]:
    """Our config keys from the published ``training_config.yaml`` of ``run`` (DataError without one)."""
    path = _config_file(run)
    if path is None:
        raise DataError(f"{run}: a published run folder without its training_config.yaml (model layout, seed and "
                        "perturbation window unknown). Fix: put the run's training_config.yaml in the folder (or "
                        "its parent).")
    raw = read_yaml(path, DataError, "published training config")
    present = {key: raw[key] for key in CONFIG_KEYS if raw.get(key) not in (None, "")}
    checked = from_dict(present, source=str(path), check_files=False)  # our schema: types, ranges, one message
    config: dict[str, Any] = {"pretrained": "openai", "adapter": "hba_dora", "dora_alpha": None,
                              "dora_dropout": 0.0, "perturb_type": "none"}
    for key in present:
        config[CONFIG_KEYS[key]] = getattr(checked, CONFIG_KEYS[key])
    return config


def published_trials(fs: pafs.FileSystem, root: str) -> list[Any]:
    """A :class:`analysis.records.Trial` per published run folder under ``root``."""
    trials = []
    for folder in run_folders(fs, root):
        run = PublishedRun(Path(folder))
        config = run_config(run.root)
        rel = posixpath.relpath(folder, root)
        trial = Trial(run.name if rel == "." else rel, folder, config, label=run.name)
        trial.history = [{**row, "inherited": False} for row in run.metrics()]
        for epoch in run.epochs():
            path = str(run.dora_path(epoch))
            trial.checkpoints[epoch] = Checkpoint(path, epoch, file_sha256(path), config)
        trials.append(trial)
    return trials


def is_published(path: str) -> bool:
    return bool(DORA_FILE.match(posixpath.basename(path)))
