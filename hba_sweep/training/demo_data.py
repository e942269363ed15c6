"""Deterministic demo data in the published formats (``python -m hba_sweep demo-data DIR``).

The data files come from ``demo_sets`` (how they are generated, and their layout); this module
adds the ready configs and the orchestration. ``DIR`` holds the data files and::

    evalsets.yaml, train.yaml, infer.yaml (for the run train.yaml makes), demo.json (the settings; makes re-runs reuse the data)
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from hba_sweep.config import from_dict, run_name
from hba_sweep.foundation.errors import DataError
from hba_sweep.foundation.io_utils import atomic_write_text, temp_dir
from hba_sweep.training.demo_sets import (
    FMRI_CONCEPTS,
    FMRI_IMAGES_PER_CONCEPT,
    N_EVAL,
    NIGHTS_TRIPLETS,
    NOD_CATEGORIES,
    NOD_IMAGES_PER_CATEGORY,
    NOD_MAX_PER_CATEGORY,
    ROIS,
    make_data_sets,
)

GENERATOR_VERSION = 2
MARKER = "demo.json"


# ----------------------------------------------------------------------------- configs


def _train_config(backbone: str, things: dict[str, Any]) -> dict[str, Any]:
    return {
        "backbone": backbone,
        "pretrained": "none",
        "vision_layers": 2,
        "transformer_layers": 3,
        "rank": 16,
        "epochs": 8,
        "batch_size": 32,
        "lr": 1e-2,
        "opt": "adamw",
        "lr_scheduler": "none",
        "random_seed": 1,
        "train_portion": 0.8,
        "early_stopping_patience": 20,
        "img_dir": "images",
        "img_annotations_file": "train.csv",
        "behavioral_rsa": True,
        "rsa_annotations_file": things["annotations_file"],
        "rsa_img_dir": things["img_dir"],
        "behavioral_rdm_file": things["reference_rdms"]["behavior"],
        "device": "cpu",
        "save_path": "runs",
        "perturb_type": "none",
    }


def _train_yaml(config: dict[str, Any]) -> str:
    header = (
        "# Demo training config written by `python -m hba_sweep demo-data`.\n"
        "# Data paths are relative to this file's folder; save_path is relative to where you run.\n"
    )
    return header + yaml.safe_dump(config, sort_keys=False)


def _infer_yaml(train: dict[str, Any], things: dict[str, Any]) -> str:
    """The inference YAML (the study's keys) for the run ``train --config train.yaml`` writes:
    behavioural RSA of every epoch's checkpoint on the 48 evaluation images."""
    name = run_name(from_dict(train, check_files=False))
    config = {
        "model_weights_path": f"{train['save_path']}/{name}",
        "epoch": "all",
        "dataset": "things",
        "evaluation_type": "behavioral",
        "img_dir": things["img_dir"],
        "inference_annotations_file": things["annotations_file"],
        "reference_rdm_paths": {"behavioral_rdm": things["reference_rdms"]["behavior"]},
        "model_rdm_distance_metric": "pearson",
        "rsa_similarity_metric": "spearman",
        "reference_rdm_distance_metric": "pearson",
        "batch_size": 64,
        "device": "cpu",
        "inference_save_dir": "inference_results",
    }
    header = (
        "# Demo inference config written by `python -m hba_sweep demo-data`: after\n"
        "#   python -m hba_sweep train --config <this folder>/train.yaml\n"
        "# run `python -m hba_sweep infer --config <this folder>/infer.yaml` from the same folder.\n"
        "# Data paths are relative to this file's folder; model_weights_path and inference_save_dir to\n"
        "# where you run (as train.yaml's save_path).\n"
    )
    return header + yaml.safe_dump(config, sort_keys=False)


# ----------------------------------------------------------------------------- entry points


def _settings(n_train: int, image_size: int, seed: int, backbone: str) -> dict[str, Any]:
    return {
        "generator_version": GENERATOR_VERSION,
        "n_train": n_train,
        "image_size": image_size,
        "seed": seed,
        "backbone": backbone,
    }


def _generate(root: Path, settings: dict[str, Any]) -> None:
    evalsets = make_data_sets(root, settings["n_train"], settings["image_size"], settings["seed"])
    atomic_write_text(
        root / "evalsets.yaml",
        "# Evaluation sets of the demo study; paths are relative to this file's folder.\n"
        + yaml.safe_dump(evalsets, sort_keys=False),
    )
    train = _train_config(settings["backbone"], evalsets["things"])
    atomic_write_text(root / "train.yaml", _train_yaml(train))
    atomic_write_text(root / "infer.yaml", _infer_yaml(train, evalsets["things"]))
    atomic_write_text(root / MARKER, json.dumps(settings, indent=2) + "\n")


def existing_settings(out_dir: Path) -> dict[str, Any] | None:
    """The settings of demo data already in ``out_dir``; DataError if it holds something else."""
    if not out_dir.exists() or (out_dir.is_dir() and not any(out_dir.iterdir())):
        return None
    marker = out_dir / MARKER
    if not out_dir.is_dir() or not marker.is_file():
        raise DataError(
            f"{out_dir}: exists and holds no demo data ({MARKER} missing). Fix: choose a new or empty directory."
        )
    try:
        return json.loads(marker.read_text())
    except (json.JSONDecodeError, OSError):
        raise DataError(f"{marker}: unreadable demo settings. Fix: delete {out_dir} or use --force.") from None


def _check_arguments(n_train: int, image_size: int) -> None:
    if n_train < 10:
        raise DataError(f"demo-data: --n-train={n_train} is too small. Fix: use at least 10 (default 480).")
    if image_size < 16:
        raise DataError(f"demo-data: image_size={image_size} is too small. Fix: use at least 16 (hba-tiny: 64).")


def make_demo_data(
    out_dir: str | os.PathLike,
    n_train: int = 480,
    image_size: int = 64,
    seed: int = 0,
    backbone: str = "hba-tiny",
    force: bool = False,
) -> Path:
    """Generate (or reuse) deterministic demo data in ``out_dir``; returns the path of train.yaml.

    Existing demo data with the same settings is reused; with other settings it is an error
    unless ``force``. Data is built in a temporary sibling folder and renamed into place.
    """
    _check_arguments(n_train, image_size)
    out_dir = Path(out_dir)
    settings = _settings(n_train, image_size, seed, backbone)
    existing = existing_settings(out_dir)
    if existing == settings and (out_dir / "train.yaml").is_file() and (out_dir / "infer.yaml").is_file() and not force:
        return out_dir / "train.yaml"
    if existing is not None and not force:
        changed = {k: (existing.get(k), v) for k, v in settings.items() if existing.get(k) != v}
        raise DataError(
            f"{out_dir}: holds demo data made with other settings {changed} (old, new). "
            "Fix: add --force to regenerate it, or choose another directory."
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(f".{out_dir.name}.", out_dir.parent)
    try:
        _generate(tmp, settings)
        if out_dir.exists():
            shutil.rmtree(out_dir)  # only reached for an empty dir or demo data (marker checked)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / "train.yaml"


def describe(out_dir: Path) -> str:
    """A short listing of what a demo directory holds."""
    s = json.loads((out_dir / MARKER).read_text())
    return "\n".join(
        [
            f"  train.csv + images/          {s['n_train']} training images ({s['image_size']} px)",
            f"  eval48/                      {N_EVAL} evaluation images + RDM48_triplet.mat",
            f"  things_fmri/                 {len(FMRI_CONCEPTS)} concepts x {FMRI_IMAGES_PER_CONCEPT} images, "
            f"RDMs {', '.join(ROIS)}",
            f"  nod/                         {NOD_CATEGORIES} categories x {NOD_IMAGES_PER_CATEGORY} images "
            f"(analysis uses {NOD_MAX_PER_CATEGORY}), RDMs {', '.join(ROIS)}",
            f"  nights/                      {NIGHTS_TRIPLETS} 2AFC triplets",
            "  evalsets.yaml, train.yaml, infer.yaml",
        ]
    )
