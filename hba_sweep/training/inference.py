"""Inference for checkpoints: 66-d predictions and their scores on an evaluation set.

``run_inference(config)`` evaluates one checkpoint from the study's inference keys
(:mod:`hba_sweep.config.infer_config`) with a :class:`hba_sweep.training.predict.Predictor` (the frozen
prefix once per image set, the adapters per checkpoint) and an evaluation set
(:class:`hba_sweep.training.scoring.EvalSet`: the images plus a scorer turning predictions into result
rows); ``python -m hba_sweep infer --config X.yaml`` (:mod:`hba_sweep.cli.infer`) writes one JSON
result per epoch.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hba_sweep.artifacts import checkpoint as ckpt
from hba_sweep.artifacts.resolve import checkpoint_dirs, load_checkpoint_any
from hba_sweep.config.infer_config import MODEL_KEYS, load_infer_config, read_infer_config
from hba_sweep.foundation.devices import resolve_device
from hba_sweep.foundation.errors import ConfigError
from hba_sweep.foundation.io_utils import atomic_write, atomic_write_text
from hba_sweep.model import ModelSpec
from hba_sweep.training.predict import Predictor
from hba_sweep.training.scoring import EvalSet, ScoreSettings, build_evalset

__all__ = ["run_inference", "write_result", "model_spec", "predictor_for", "evalset_from_infer_config"]


def evalset_from_infer_config(cfg: Mapping[str, Any]) -> EvalSet:
    """The evaluation set an inference config describes, in the ``evalsets.yaml`` form."""
    dataset, etype = cfg["dataset"], cfg["evaluation_type"]
    spec: dict[str, Any] = {"img_dir": cfg["img_dir"], "reference_rdms": cfg["reference_rdm_paths"]}
    if dataset == "things":
        spec["annotations_file"] = cfg["annotations_file"]
    elif dataset == "things_fmri":
        spec["metadata_csv"] = cfg["annotations_file"]
    elif dataset == "nod":
        spec.update(
            index_csv=cfg["annotations_file"],
            max_images_per_category=cfg["max_images_per_category"],
            seed=cfg["random_seed"],
        )
    else:
        spec.update(data_csv=cfg["annotations_file"], split=cfg["split"])
    settings = ScoreSettings(
        cfg["model_rdm_distance_metric"],
        cfg["rsa_similarity_metric"],
        cfg["reference_rdm_distance_metric"],
        int(cfg["n_bootstrap"] or 0),
        int(cfg["random_seed"]),
    )
    return build_evalset("cka" if etype == "cka" else dataset, spec, settings)


def run_inference(
    config: Mapping[str, Any] | str | os.PathLike,
    predictor: Predictor | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Evaluate one checkpoint: returns epoch, checkpoint, the (N, 66) predictions and the score rows.

    ``config`` holds the study's inference keys (or is a YAML path); the checkpoint is
    ``model_weights_path`` at ``epoch`` (latest if none) unless ``checkpoint_dir`` is given.
    For behavioural evaluation, ``behavioral_rsa_rho``/``behavioral_rsa_p`` hold the first reference's RSA.
    """
    cfg = load_infer_config(config) if isinstance(config, (str, os.PathLike)) else read_infer_config(config)
    if checkpoint_dir is None:
        dirs = checkpoint_dirs(cfg["model_weights_path"], cfg["epoch"])
        if len(dirs) != 1:
            raise ConfigError(
                f"epoch={cfg['epoch']!r} names {len(dirs)} checkpoints; run_inference evaluates one. "
                "Fix: give one epoch, or use `python -m hba_sweep infer` for several."
            )
        checkpoint_dir = dirs[0]
    adapters, meta = load_checkpoint_any(Path(checkpoint_dir))
    if predictor is None or predictor.spec != model_spec(cfg, meta):
        predictor = predictor_for(cfg, meta)
    evalset = evalset_from_infer_config(cfg)
    predictions, rows = predictor.evaluate(adapters, [evalset], str(checkpoint_dir))[evalset.dataset]
    result = {
        "run_name": meta.get("run_name", Path(checkpoint_dir).name),
        "epoch": meta.get("epoch"),
        "checkpoint": str(checkpoint_dir),
        "dataset": cfg["dataset"],
        "evaluation_type": cfg["evaluation_type"],
        "n_images": len(evalset.paths),
        "predictions": predictions,
        "results": rows,
    }
    if cfg["evaluation_type"] == "behavioral" and rows:
        result.update(behavioral_rsa_rho=rows[0]["value"], behavioral_rsa_p=rows[0]["p_value"])
    return result


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def write_result(result: Mapping[str, Any], cfg: Mapping[str, Any]) -> Path:
    """``<inference_save_dir>/<run>_epoch<e>_<dataset>_<type>.json`` (+ predictions .npy), atomically."""
    out_dir = Path(cfg["inference_save_dir"])
    stem = f"{result['run_name']}_epoch{result['epoch']}_{result['dataset']}_{result['evaluation_type']}"
    payload = {k: v for k, v in result.items() if k != "predictions"}
    payload["settings"] = {
        k: cfg[k]
        for k in (
            "model_rdm_distance_metric",
            "rsa_similarity_metric",
            "reference_rdm_distance_metric",
            "n_bootstrap",
            "img_dir",
            "annotations_file",
            "reference_rdm_paths",
            "max_images_per_category",
            "random_seed",
            "split",
        )
    }
    if cfg["save_predictions"]:
        buf = io.BytesIO()
        np.save(buf, np.asarray(result["predictions"], dtype=np.float32))
        atomic_write(out_dir / f"{stem}_predictions.npy", lambda fh: fh.write(buf.getvalue()))
        payload["predictions_file"] = f"{stem}_predictions.npy"
    path = out_dir / f"{stem}.json"
    atomic_write_text(path, json.dumps(_json_safe(payload), indent=1))
    return path


def model_spec(cfg: Mapping[str, Any], meta: Mapping[str, Any]) -> ModelSpec:
    """The checkpoint's model settings (meta.json), overridden by the keys the YAML sets."""
    return ModelSpec.from_mapping(ckpt.run_config(meta) if meta else {}, {k: cfg[k] for k in MODEL_KEYS if k in cfg})


def predictor_for(cfg: Mapping[str, Any], meta: Mapping[str, Any]) -> Predictor:
    return Predictor(
        model_spec(cfg, meta),
        resolve_device(cfg["device"]),
        cfg["cache_dir"],
        cfg["batch_size"],
        precision=cfg.get("precision", "fp32"),
    )
