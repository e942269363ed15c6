"""Inference for checkpoints: 66-d predictions and their scores on an evaluation set.

Two layers:

- The batched path (:class:`Predictor`): for one model layout (backbone, layer split, rank) the
  frozen vision prefix of an image set is computed once through :mod:`hba_sweep.training.prefix_cache`
  (the same cache training uses), then each checkpoint only loads its adapters and runs
  ``forward_from_prefix``. ``model.forward`` on images stays the oracle the tests compare with.
- Evaluation sets (:class:`hba_sweep.training.scoring.EvalSet`): the images to run plus a scorer turning
  predictions into result rows (behavioural and neural RSA, NIGHTS 2AFC, CKA).

``run_inference(config)`` evaluates one checkpoint from the study's inference keys, and
``python -m hba_sweep infer --config X.yaml`` (:mod:`hba_sweep.cli.infer`) writes one JSON result per epoch.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from hba_sweep import rsa
from hba_sweep.artifacts import checkpoint as ckpt
from hba_sweep.artifacts.resolve import checkpoint_dirs, load_checkpoint_any
from hba_sweep.config import ALIASES as TRAIN_ALIASES
from hba_sweep.config import FIELD_NAMES, parse_overrides
from hba_sweep.config.published_keys import INFER_IGNORED, TRAIN_IGNORED
from hba_sweep.data.images import ImageStore
from hba_sweep.foundation.devices import resolve_device
from hba_sweep.foundation.errors import CheckpointError, ConfigError
from hba_sweep.foundation.io_utils import atomic_write, atomic_write_text
from hba_sweep.foundation.yaml_io import read_yaml
from hba_sweep.model import CLIPHBA
from hba_sweep.training import prefix_cache
from hba_sweep.training.scoring import NIGHTS_DEFAULT_SPLIT, EvalSet, Row, ScoreSettings, build_evalset

MODEL_KEYS = ("backbone", "pretrained", "adapter", "vision_layers", "transformer_layers", "rank", "dora_alpha",
              "dora_dropout")
COUNTERS = {"prefix_images": 0, "checkpoint_predictions": 0}  # work done in this process (tests read it)


# ---- model layout -----------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """What decides the network a checkpoint's adapters belong to."""

    backbone: str = "ViT-L/14"
    pretrained: str | None = "openai"
    adapter: str = "hba_dora"
    vision_layers: int = 2
    transformer_layers: int = 1
    rank: int = 32
    dora_alpha: float | None = None  # None: the adapter's default (hba_dora 16, peft_dora rank)
    dora_dropout: float = 0.0

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> "ModelSpec":
        merged = {k: values[k] for k in MODEL_KEYS if k in values}
        merged.update({k: v for k, v in (overrides or {}).items() if k in MODEL_KEYS and v is not None})
        return cls(**merged)

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.__dict__, sort_keys=True).encode()).hexdigest()[:16]

    def build(self):
        return CLIPHBA(backbone=self.backbone, pretrained=self.pretrained, vision_layers=self.vision_layers,
                       transformer_layers=self.transformer_layers, rank=self.rank, dora_alpha=self.dora_alpha,
                       dora_dropout=self.dora_dropout, adapter=self.adapter)


# ---- the batched path -------------------------------------------------------------------
class Predictor:
    """One model layout on one device; frozen prefix per image set computed once (cached on disk)."""

    def __init__(self, spec: ModelSpec, device: torch.device | str = "cpu", cache_root: str | os.PathLike | None = None,
                 batch_size: int = 64, precision: str = "fp32") -> None:
        self.spec = spec
        self.device = torch.device(device)
        self.model = spec.build().to(self.device).eval()
        self.cache_root = cache_root
        self.batch_size = batch_size
        use_bf16 = self.device.type == "cuda" and precision in ("auto", "bf16")
        self.dtype = torch.bfloat16 if use_bf16 else torch.float32
        self._prefixes: dict[tuple[str, ...], prefix_cache.CachedPrefix | prefix_cache.DevicePrefix] = {}  # by paths

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.dtype == torch.bfloat16)

    def prefix(self, paths: Sequence[Path]) -> prefix_cache.CachedPrefix | prefix_cache.DevicePrefix:
        """The frozen vision prefix of ``paths`` (in order), computed once per image set."""
        key = tuple(map(str, paths))
        if key not in self._prefixes:
            def count(n: int) -> None:
                COUNTERS["prefix_images"] += n

            def batches():
                        return ImageStore(paths, self.model.image_size).batch

            prefix = prefix_cache.frozen_prefix(self.model, paths, batches, self.cache_root, self.dtype, self.device,
                                                self.batch_size, self._autocast, count)
            self._prefixes[key] = prefix_cache.hold_on_device(prefix, self.device)
        return self._prefixes[key]

    def load(self, adapters: Mapping[str, torch.Tensor], source: str = "<adapters>") -> None:
        try:
            self.model.load_adapter_state_dict(dict(adapters))
        except (ValueError, RuntimeError) as exc:  # other keys, or other shapes (rank)
            raise CheckpointError(f"{source}: {exc}. Fix: the model settings (backbone, adapter, vision_layers, "
                                  "transformer_layers, rank) must be those the checkpoint was trained with.") from None
        except CheckpointError as exc:  # the other adapter kind
            raise CheckpointError(f"{source}: {exc}") from None

    @torch.no_grad()
    def predict(self, paths: Sequence[Path]) -> np.ndarray:
        """(N, 66) float64 predictions of the loaded adapters for the images at ``paths``."""
        prefix = self.prefix(paths)
        out = []
        with self._autocast():
            text = self.model.text_features()  # once per checkpoint, not per batch
        for start in range(0, len(paths), self.batch_size):
            tokens = prefix.rows(range(start, min(len(paths), start + self.batch_size))).to(self.device)
            with self._autocast():
                out.append(self.model.forward_from_prefix(tokens, text).float().cpu())
        COUNTERS["checkpoint_predictions"] += 1
        return torch.cat(out).numpy().astype(np.float64)

    def evaluate(self, adapters: Mapping[str, torch.Tensor], evalsets: Sequence[EvalSet],
                 source: str = "<adapters>") -> dict[str, tuple[np.ndarray, list[Row]]]:
        """Predictions and score rows of one checkpoint on each evaluation set."""
        self.load(adapters, source)
        out = {}
        for es in evalsets:
            predictions = self.predict(es.paths)
            out[es.dataset] = (predictions, es.score(predictions))
        return out


# ---- one checkpoint from the study's inference YAML -------------------------------------
EVAL_TYPES = {"behavioral": ("things",), "neural": ("things_fmri", "nod"), "triplet": ("nights",), "cka": ("things",)}
DATASET_ALIASES = {"things": "things", "things48": "things", "behavior": "things", "things_fmri": "things_fmri",
                   "fmri": "things_fmri", "nod": "nod", "nights": "nights"}
INFER_DEFAULTS: dict[str, Any] = {
    "model_weights_path": None, "epoch": None, "dataset": None, "evaluation_type": "behavioral", "img_dir": None,
    "annotations_file": None, "reference_rdm_paths": None, "model_rdm_distance_metric": "pearson",
    "rsa_similarity_metric": "spearman", "reference_rdm_distance_metric": "pearson",
    "max_images_per_category": None, "random_seed": 0, "batch_size": 64, "inference_save_dir": "inference_results",
    "backbone": None, "pretrained": None, "adapter": None, "vision_layers": None, "transformer_layers": None, "rank": None,
    "dora_alpha": None, "device": "auto", "split": NIGHTS_DEFAULT_SPLIT, "n_bootstrap": 0, "save_predictions": True,
    "cache_dir": None, "precision": "fp32",
}
INFER_ALIASES = {"inference_annotations_file": "annotations_file", "clip_hba_backbone": "backbone", "cuda": "device",
                 "bootstrap": "n_bootstrap"}
PATH_KEYS = ("model_weights_path", "img_dir", "annotations_file", "inference_save_dir", "cache_dir")


def read_infer_config(raw: Mapping[str, Any], source: str = "<config>", base: Path | None = None,
                      notes: list[str] | None = None) -> dict[str, Any]:
    """Normalise the study's inference keys; ConfigError listing every problem. Published keys with
    no effect here are appended to ``notes`` (if given)."""
    cfg = dict(INFER_DEFAULTS)
    problems = []
    if raw.get("load_hba") is False or str(raw.get("load_hba", "")).lower() == "false":
        problems.append(f"{source}: load_hba=false (evaluate plain CLIP without the adapters) is not supported. "
                        "Fix: set load_hba: true and point model_weights_path at a CLIP-HBA checkpoint.")
    ignored = [k for k in raw if k in INFER_IGNORED or k in TRAIN_IGNORED]
    if ignored and notes is not None:
        notes.append(f"{source}: published keys with no effect here, ignored: "
                     + "; ".join(f"{k} ({INFER_IGNORED.get(k) or TRAIN_IGNORED[k]})" for k in ignored))
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
            problems.append(f"{source}: unknown key {key!r}. Fix: " + (f"did you mean {close[0]!r}?" if close
                                                                        else "remove it."))
    if cfg["model_weights_path"] in (None, ""):
        problems.append(f"{source}: model_weights_path is missing. Fix: give a run directory (with epoch), "
                        "a checkpoint's adapter.safetensors or a published epoch<e>_dora_params.pth.")
    etype = cfg["evaluation_type"]
    if etype not in EVAL_TYPES:
        problems.append(f"{source}: evaluation_type={etype!r} is not known. Fix: use one of {list(EVAL_TYPES)}.")
    else:
        dataset = DATASET_ALIASES.get(str(cfg["dataset"] or EVAL_TYPES[etype][0]).lower())
        if dataset not in EVAL_TYPES[etype]:
            problems.append(f"{source}: dataset={cfg['dataset']!r} does not go with evaluation_type={etype!r}. "
                            f"Fix: use dataset {' or '.join(EVAL_TYPES[etype])}.")
        cfg["dataset"] = dataset
    for key in ("model_rdm_distance_metric", "reference_rdm_distance_metric"):
        if cfg[key] not in rsa.DISTANCE_METRICS:
            problems.append(f"{source}: {key}={cfg[key]!r} is not known. Fix: use one of {list(rsa.DISTANCE_METRICS)}.")
    if cfg["rsa_similarity_metric"] not in rsa.SIMILARITY_METRICS:
        problems.append(f"{source}: rsa_similarity_metric={cfg['rsa_similarity_metric']!r} is not known. "
                        f"Fix: use one of {list(rsa.SIMILARITY_METRICS)}.")
    if not isinstance(cfg["batch_size"], int) or cfg["batch_size"] < 1:
        problems.append(f"{source}: batch_size={cfg['batch_size']!r} must be a positive integer. Fix: e.g. 64.")
    for key in ("img_dir", "annotations_file"):
        if not cfg[key]:
            problems.append(f"{source}: {key} is missing. Fix: give the path of the evaluation set's "
                            f"{'image folder' if key == 'img_dir' else 'CSV'}.")
    needs_refs = etype in ("behavioral", "neural")
    if needs_refs and not cfg["reference_rdm_paths"]:
        problems.append(f"{source}: reference_rdm_paths is missing (needed for evaluation_type {etype}). "
                        "Fix: give an RDM file, a list, or a mapping name/ROI -> file.")
    if problems:
        raise ConfigError("\n".join(problems))
    if base is not None:
        for key in PATH_KEYS:
            cfg[key] = _relative_to(cfg[key], base)
    cfg["reference_rdm_paths"] = _reference_mapping(cfg["reference_rdm_paths"], base, source)
    return cfg


def _relative_to(value: Any, base: Path) -> Any:
    """A relative path that exists next to the YAML names that file, as for training configs
    (config.resolve_paths) even when the working directory has one too; otherwise it is kept."""
    if isinstance(value, str) and value and not os.path.isabs(value) and (base / value).exists():
        return str(base / value)
    return value


def _reference_mapping(value: Any, base: Path | None, source: str) -> dict[str, str]:
    if not value:
        return {}
    if isinstance(value, (str, os.PathLike)):
        value = [value]
    if isinstance(value, list):
        value = {Path(str(p)).stem: p for p in value}
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: reference_rdm_paths must be a file, a list of files or a mapping name -> file. "
                          "Fix: e.g. {V1: rdm_V1.mat}.")
    return {str(k): str(_relative_to(str(v), base) if base else v) for k, v in value.items()}


def evalset_from_infer_config(cfg: Mapping[str, Any]) -> EvalSet:
    """The evaluation set an inference config describes, in the ``evalsets.yaml`` form."""
    dataset, etype = cfg["dataset"], cfg["evaluation_type"]
    spec: dict[str, Any] = {"img_dir": cfg["img_dir"], "reference_rdms": cfg["reference_rdm_paths"]}
    if dataset == "things":
        spec["annotations_file"] = cfg["annotations_file"]
    elif dataset == "things_fmri":
        spec["metadata_csv"] = cfg["annotations_file"]
    elif dataset == "nod":
        spec.update(index_csv=cfg["annotations_file"], max_images_per_category=cfg["max_images_per_category"],
                    seed=cfg["random_seed"])
    else:
        spec.update(data_csv=cfg["annotations_file"], split=cfg["split"])
    settings = ScoreSettings(cfg["model_rdm_distance_metric"], cfg["rsa_similarity_metric"],
                             cfg["reference_rdm_distance_metric"], int(cfg["n_bootstrap"] or 0), int(cfg["random_seed"]))
    return build_evalset("cka" if etype == "cka" else dataset, spec, settings)


def run_inference(config: Mapping[str, Any] | str | os.PathLike, predictor: Predictor | None = None,
                  checkpoint_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Evaluate one checkpoint: returns epoch, checkpoint, the (N, 66) predictions and the score rows.

    ``config`` holds the study's inference keys (or is a YAML path); the checkpoint is
    ``model_weights_path`` at ``epoch`` (latest if none) unless ``checkpoint_dir`` is given.
    For behavioural evaluation, ``behavioral_rsa_rho``/``behavioral_rsa_p`` hold the first reference's RSA.
    """
    cfg = load_infer_config(config) if isinstance(config, (str, os.PathLike)) else read_infer_config(config)
    if checkpoint_dir is None:
        dirs = checkpoint_dirs(cfg["model_weights_path"], cfg["epoch"])
        if len(dirs) != 1:
            raise ConfigError(f"epoch={cfg['epoch']!r} names {len(dirs)} checkpoints; run_inference evaluates one. "
                              "Fix: give one epoch, or use `python -m hba_sweep infer` for several.")
        checkpoint_dir = dirs[0]
    adapters, meta = load_checkpoint_any(Path(checkpoint_dir))
    if predictor is None or predictor.spec != model_spec(cfg, meta):
        predictor = predictor_for(cfg, meta)
    evalset = evalset_from_infer_config(cfg)
    predictions, rows = predictor.evaluate(adapters, [evalset], str(checkpoint_dir))[evalset.dataset]
    result = {"run_name": meta.get("run_name", Path(checkpoint_dir).name), "epoch": meta.get("epoch"),
              "checkpoint": str(checkpoint_dir), "dataset": cfg["dataset"], "evaluation_type": cfg["evaluation_type"],
              "n_images": len(evalset.paths), "predictions": predictions, "results": rows}
    if cfg["evaluation_type"] == "behavioral" and rows:
        result.update(behavioral_rsa_rho=rows[0]["value"], behavioral_rsa_p=rows[0]["p_value"])
    return result


def load_infer_config(path: str | os.PathLike, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read an inference YAML (relative paths next to it), with ``--set key=value`` overrides on top."""
    raw = read_yaml(path)
    extra = parse_overrides(overrides)
    source = str(path) + (f" (with --set {', '.join(f'{k}={v}' for k, v in extra.items())})" if extra else "")
    if extra:
        overridden = {INFER_ALIASES.get(k, k) for k in extra}
        raw = {**{k: v for k, v in raw.items() if INFER_ALIASES.get(k, k) not in overridden}, **extra}
    notes: list[str] = []
    cfg = read_infer_config(raw, source, Path(path).parent, notes)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return cfg


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
    payload["settings"] = {k: cfg[k] for k in ("model_rdm_distance_metric", "rsa_similarity_metric",
                                               "reference_rdm_distance_metric", "n_bootstrap", "img_dir",
                                               "annotations_file", "reference_rdm_paths", "max_images_per_category",
                                               "random_seed", "split")}
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
    return Predictor(model_spec(cfg, meta), resolve_device(cfg["device"]), cfg["cache_dir"], cfg["batch_size"],
                     precision=cfg.get("precision", "fp32"))
