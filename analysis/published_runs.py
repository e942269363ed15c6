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
from pathlib import Path
from typing import Any

from analysis.records import Checkpoint, Trial
from hba_sweep.artifacts.layout import published_run_folders
from hba_sweep.artifacts.published import PublishedRun
from hba_sweep.config import from_dict
from hba_sweep.config.published_keys import published_name
from hba_sweep.foundation import storage
from hba_sweep.foundation.errors import DataError
from hba_sweep.foundation.yaml_io import read_yaml
from hba_sweep.model import ModelSpec

# Our config keys read from a published training_config.yaml (the model layout and the trial's identity;
# pretrained is not a published key, they always use openai: it is read for other weights), by their
# published spelling (hba_sweep.config.published_keys).
TRIAL_KEYS = (
    "backbone",
    "vision_layers",
    "transformer_layers",
    "rank",
    "random_seed",
    "perturb_type",
    "perturb_epoch",
    "perturb_length",
    "perturb_seed",
    "lr",
    "batch_size",
    "train_portion",
    "epochs",
    "pretrained",
)
# The model settings a published run does not record: the published ones (ModelSpec's defaults).
UNRECORDED = ("pretrained", "adapter", "dora_alpha", "dora_dropout")
PUBLISHED_MODEL = ModelSpec()


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
        raise DataError(
            f"{run}: a published run folder without its training_config.yaml (model layout, seed and "
            "perturbation window unknown). Fix: put the run's training_config.yaml in the folder (or "
            "its parent)."
        )
    raw = read_yaml(path, DataError, "published training config")
    present = {key: raw[key] for key in map(published_name, TRIAL_KEYS) if raw.get(key) not in (None, "")}
    checked = from_dict(present, source=str(path), check_files=False)  # our schema: types, ranges, one message
    config: dict[str, Any] = {**{k: getattr(PUBLISHED_MODEL, k) for k in UNRECORDED}, "perturb_type": "none"}
    for ours in TRIAL_KEYS:
        if published_name(ours) in present:
            config[ours] = getattr(checked, ours)
    return config


def published_trials(fs: storage.FileSystem, root: str) -> list[Any]:
    """A :class:`analysis.records.Trial` per published run folder under ``root``."""
    trials = []
    for folder in published_run_folders(root, fs):
        run = PublishedRun(Path(folder))
        config = run_config(run.root)
        rel = posixpath.relpath(folder, root)
        trial = Trial(run.name if rel == "." else rel, folder, config, label=run.name)
        trial.history = [{**row, "inherited": False} for row in run.metrics()]
        for epoch in run.epochs():
            path = str(run.dora_path(epoch))
            trial.checkpoints[epoch] = Checkpoint(path, epoch, storage.sha256(path, fs), config)
        trials.append(trial)
    return trials
