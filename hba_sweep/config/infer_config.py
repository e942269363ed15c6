"""The study's inference YAML (the published ``inference_config.yaml`` keys): defaults, validation
and loading (hba_sweep.config.loader). The model settings it may set override those a checkpoint
recorded (``ModelSpec.from_mapping``); hba_sweep.training.inference evaluates what it names."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hba_sweep import rsa
from hba_sweep.config.loader import load_yaml_config
from hba_sweep.config.published_keys import INFER_IGNORED, TRAIN_IGNORED, aliases_into
from hba_sweep.config.train_config import ALIASES as TRAIN_ALIASES
from hba_sweep.config.train_config import FIELD_NAMES
from hba_sweep.foundation.choices import NIGHTS_DEFAULT_SPLIT
from hba_sweep.foundation.errors import ConfigError
from hba_sweep.model.spec import MODEL_FIELDS

EVAL_TYPES = {"behavioral": ("things",), "neural": ("things_fmri", "nod"), "triplet": ("nights",), "cka": ("things",)}
DATASET_ALIASES = {
    "things": "things",
    "things48": "things",
    "behavior": "things",
    "things_fmri": "things_fmri",
    "fmri": "things_fmri",
    "nod": "nod",
    "nights": "nights",
}
# The model settings an inference YAML may set (None: the checkpoint's); dropout does not act at inference.
MODEL_KEYS = tuple(k for k in MODEL_FIELDS if k != "dora_dropout")
INFER_DEFAULTS: dict[str, Any] = {
    "model_weights_path": None,
    "epoch": None,
    "dataset": None,
    "evaluation_type": "behavioral",
    "img_dir": None,
    "annotations_file": None,
    "reference_rdm_paths": None,
    "model_rdm_distance_metric": "pearson",
    "rsa_similarity_metric": "spearman",
    "reference_rdm_distance_metric": "pearson",
    "max_images_per_category": None,
    "random_seed": 0,
    "batch_size": 64,
    "inference_save_dir": "inference_results",
    **dict.fromkeys(MODEL_KEYS),
    "device": "auto",
    "split": NIGHTS_DEFAULT_SPLIT,
    "n_bootstrap": 0,
    "save_predictions": True,
    "cache_dir": None,
    "precision": "fp32",
}
INFER_ALIASES = aliases_into(INFER_DEFAULTS)  # the published spellings of the inference keys
# Paths read next to the YAML when they exist there (else from the working directory).
PATH_KEYS = (
    "model_weights_path",
    "img_dir",
    "annotations_file",
    "inference_save_dir",
    "cache_dir",
    "reference_rdm_paths",
)


def read_infer_config(
    raw: Mapping[str, Any], source: str = "<config>", notes: list[str] | None = None
) -> dict[str, Any]:
    """Normalise the study's inference keys; ConfigError listing every problem. Published keys with
    no effect here are appended to ``notes`` (if given). Relative paths are taken as given
    (:func:`load_infer_config` resolves a file's next to it)."""
    cfg = dict(INFER_DEFAULTS)
    problems = []
    if raw.get("load_hba") is False or str(raw.get("load_hba", "")).lower() == "false":
        problems.append(
            f"{source}: load_hba=false (evaluate plain CLIP without the adapters) is not supported. "
            "Fix: set load_hba: true and point model_weights_path at a CLIP-HBA checkpoint."
        )
    ignored = [k for k in raw if k in INFER_IGNORED or k in TRAIN_IGNORED]
    if ignored and notes is not None:
        notes.append(
            f"{source}: published keys with no effect here, ignored: "
            + "; ".join(f"{k} ({INFER_IGNORED.get(k) or TRAIN_IGNORED[k]})" for k in ignored)
        )
    for key, value in raw.items():
        if key in ignored:
            continue
        name = INFER_ALIASES.get(key, key)
        if name != key and key in raw and name in raw and raw[name] != value:
            problems.append(f"{source}: {key}={value!r} and {name}={raw[name]!r} disagree. Fix: keep one of them.")
        elif name in cfg:
            cfg[name] = value
        elif key not in FIELD_NAMES and key not in TRAIN_ALIASES:  # training keys of a shared YAML are ignored
            close = difflib.get_close_matches(key, list(cfg) + list(INFER_ALIASES), n=1)
            problems.append(
                f"{source}: unknown key {key!r}. Fix: " + (f"did you mean {close[0]!r}?" if close else "remove it.")
            )
    if cfg["model_weights_path"] in (None, ""):
        problems.append(
            f"{source}: model_weights_path is missing. Fix: give a run directory (with epoch), "
            "a checkpoint's adapter.safetensors or a published epoch<e>_dora_params.pth."
        )
    etype = cfg["evaluation_type"]
    if etype not in EVAL_TYPES:
        problems.append(f"{source}: evaluation_type={etype!r} is not known. Fix: use one of {list(EVAL_TYPES)}.")
    else:
        dataset = DATASET_ALIASES.get(str(cfg["dataset"] or EVAL_TYPES[etype][0]).lower())
        if dataset not in EVAL_TYPES[etype]:
            problems.append(
                f"{source}: dataset={cfg['dataset']!r} does not go with evaluation_type={etype!r}. "
                f"Fix: use dataset {' or '.join(EVAL_TYPES[etype])}."
            )
        cfg["dataset"] = dataset
    for key in ("model_rdm_distance_metric", "reference_rdm_distance_metric"):
        if cfg[key] not in rsa.DISTANCE_METRICS:
            problems.append(f"{source}: {key}={cfg[key]!r} is not known. Fix: use one of {list(rsa.DISTANCE_METRICS)}.")
    if cfg["rsa_similarity_metric"] not in rsa.SIMILARITY_METRICS:
        problems.append(
            f"{source}: rsa_similarity_metric={cfg['rsa_similarity_metric']!r} is not known. "
            f"Fix: use one of {list(rsa.SIMILARITY_METRICS)}."
        )
    if not isinstance(cfg["batch_size"], int) or cfg["batch_size"] < 1:
        problems.append(f"{source}: batch_size={cfg['batch_size']!r} must be a positive integer. Fix: e.g. 64.")
    for key in ("img_dir", "annotations_file"):
        if not cfg[key]:
            problems.append(
                f"{source}: {key} is missing. Fix: give the path of the evaluation set's "
                f"{'image folder' if key == 'img_dir' else 'CSV'}."
            )
    needs_refs = etype in ("behavioral", "neural")
    if needs_refs and not cfg["reference_rdm_paths"]:
        problems.append(
            f"{source}: reference_rdm_paths is missing (needed for evaluation_type {etype}). "
            "Fix: give an RDM file, a list, or a mapping name/ROI -> file."
        )
    if problems:
        raise ConfigError("\n".join(problems))
    cfg["reference_rdm_paths"] = _reference_mapping(cfg["reference_rdm_paths"], source)
    return cfg


def _reference_mapping(value: Any, source: str) -> dict[str, str]:
    if not value:
        return {}
    if isinstance(value, (str, os.PathLike)):
        value = [value]
    if isinstance(value, list):
        value = {Path(str(p)).stem: p for p in value}
    if not isinstance(value, dict):
        raise ConfigError(
            f"{source}: reference_rdm_paths must be a file, a list of files or a mapping name -> file. "
            "Fix: e.g. {V1: rdm_V1.mat}."
        )
    return {str(k): str(v) for k, v in value.items()}


def load_infer_config(path: str | os.PathLike, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read an inference YAML (relative paths next to it), with ``--set key=value`` overrides on top."""
    return load_yaml_config(
        path,
        overrides,
        read_infer_config,
        INFER_ALIASES,
        if_there=PATH_KEYS,
        path_defaults={"inference_save_dir": INFER_DEFAULTS["inference_save_dir"]},
    )
