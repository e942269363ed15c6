"""The training configuration: one schema, the published study's YAML keys, strict validation.

``load_config(path, overrides)`` reads a YAML file, applies ``--set key=value`` overrides
(hba_sweep.config.loader) and returns a validated :class:`TrainConfig`. Every problem is collected
and raised together as a :class:`ConfigError` naming the source, the key, the value and the fix,
before any model is built. This module holds the schema, the coercion of YAML/CLI values and run
names; the value checks are in hba_sweep.config.train_checks, the file checks in
hba_sweep.config.file_checks.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from hba_sweep.config.loader import load_yaml_config, resolve_relative
from hba_sweep.config.published_keys import (
    TRAIN_CHECKED,
    TRAIN_IGNORED,
    aliases_into,
    check_training_mode,
    epoch_duration,
)
from hba_sweep.config.train_checks import check_values
from hba_sweep.foundation.devices import published_device
from hba_sweep.foundation.errors import ConfigError
from hba_sweep.foundation.io_utils import atomic_write_text
from hba_sweep.model.spec import ForwardPlan, ModelSpec

# Published keys whose empty value means "unset": the default applies (the published config leaves
# perturb_epoch/perturb_length/perturb_seed empty for a baseline).
EMPTY_IS_DEFAULT = {"perturb_epoch", "perturb_length", "perturb_seed", "lr_warmup_epochs", "max_duration"}

# Spellings of the study's criterion names accepted for ``criterion: mse``.
CRITERION_NAMES = {"mse": "mse", "mseloss": "mse", "mean_squared_error": "mse"}
# Earlier names of the published schedulers.
SCHEDULER_NAMES = {"cosine": "cosineannealinglr", "cosine_warmup": "cosineannealinglrwithwarmup"}
LOWERCASE_CHOICES = ("opt", "lr_scheduler", "precision", "fork_early_stopping", "dataset_type")

PERTURB_FIELDS = ("perturb_type", "perturb_epoch", "perturb_length", "perturb_seed", "perturb_fraction")
# Settings that do not change what a run computes so far: a resumed run may change them, a fork
# may also change its perturbation.
RESUME_MAY_CHANGE = {
    "epochs",
    "early_stopping_patience",
    "progress",
    "device",
    "resume_from",
    "num_workers",
    "save_path",
    "run_name",
    "precision",
    "cache_frozen_prefix",
    "cache_dtype",
    "cache_dir",
    "prefix_on_gpu",
    "keep_images_in_memory",
    "init_from",
    "init_epoch",
    "cpu_fallback",
    "wandb_project",
    "wandb_entity",
    "fork_early_stopping",
    "baseline_checkpoint_path",
}
FORK_MAY_CHANGE = RESUME_MAY_CHANGE | set(PERTURB_FIELDS)

PATH_FIELDS = ("img_dir", "img_annotations_file", "rsa_annotations_file", "rsa_img_dir", "behavioral_rdm_file")
# Paths a config file names relative to itself (the data paths, a pinned split, a baseline run).
RELATIVE_PATHS = PATH_FIELDS + ("split_file", "baseline_checkpoint_path")


@dataclass(frozen=True)
class TrainConfig(ModelSpec):
    """Every setting of one training run, with the defaults of the published study.

    The model settings come first, from :class:`hba_sweep.model.ModelSpec` (``model_spec``: them alone;
    ``alpha``: the DoRA scaling numerator); ``forward_plan``: the cached path they train with.
    """

    # optimisation
    epochs: int = 500
    batch_size: int = 64
    lr: float = 1e-4
    opt: str = "adamw"
    weight_decay: float = 0.0
    momentum: float = 0.9
    lr_scheduler: str = "none"
    lr_warmup_epochs: int = 0
    criterion: str = "mse"
    random_seed: int = 1
    train_portion: float = 0.8
    split_file: str | None = None  # pin the split: validation image names (JSON/CSV) or dataset_split_indices.pth
    early_stopping_patience: int | None = 20  # None or 0: never stop early
    fork_early_stopping: str = "reset"  # a fork restarts early stopping (published) or inherits the counter
    # data
    dataset_type: str = "things"
    img_dir: str | None = None
    img_annotations_file: str | None = None
    num_workers: int = 0
    # behavioural RSA each epoch
    behavioral_rsa: bool = True
    rsa_annotations_file: str | None = None
    rsa_img_dir: str | None = None
    behavioral_rdm_file: str | None = None
    model_rdm_distance_metric: str = "pearson"
    rsa_similarity_metric: str = "spearman"
    # perturbation
    perturb_type: str = "none"
    perturb_epoch: int = 0
    perturb_length: int = 1
    perturb_seed: int = 42
    perturb_fraction: float = 1.0
    # run bookkeeping
    save_path: str = "runs"
    run_name: str | None = None
    device: str = "auto"
    resume_from: str | None = None
    init_from: str | None = None
    init_epoch: int | None = None
    baseline_checkpoint_path: str | None = None  # published key: fork from this run's epoch perturb_epoch - 1
    cpu_fallback: bool = False  # set by the published `cuda` key: no GPU -> CPU with one log line
    wandb_project: str | None = None  # empty: W&B off
    wandb_entity: str | None = None
    # speed (docs/performance.md)
    cache_frozen_prefix: bool = True
    precision: str = "fp32"  # as published; bf16: autocast, bf16 prefix cache and TF32 on CUDA; auto: bf16 on CUDA
    cache_dtype: str = "auto"  # frozen-prefix cache: bfloat16 when precision resolves to bf16, else float32
    cache_dir: str | None = None  # None: <save_path>/prefix_cache
    prefix_on_gpu: bool = True  # on CUDA: the cached prefix held in GPU memory when it takes <= half the free memory
    keep_images_in_memory: bool = True
    progress: bool = True

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed, validated again."""
        return from_dict({**self.to_dict(), **changes}, source="<replace>")

    def to_dict(self) -> dict[str, Any]:
        """Every field by name, in schema order (all values are scalars: a shallow copy is a full one)."""
        return {name: getattr(self, name) for name in FIELD_NAMES}

    @property
    def forward_plan(self) -> ForwardPlan:
        """``cache_frozen_prefix``: every shortcut of the cached path, or none (the published computation)."""
        return ForwardPlan.cached(self.cache_frozen_prefix)


FIELD_TYPES = {f.name: f.type for f in fields(TrainConfig)}
FIELD_NAMES = tuple(FIELD_TYPES)
DEFAULTS = TrainConfig()
ALIASES = aliases_into(FIELD_NAMES)  # the published spellings of TrainConfig's keys
FIELD_KINDS = {name: (kind.replace(" | None", ""), "None" in kind) for name, kind in FIELD_TYPES.items()}


def _fix_for_unknown(key: str) -> str:
    close = difflib.get_close_matches(key, list(FIELD_NAMES) + list(ALIASES), n=1)
    return (
        f"did you mean {close[0]!r}?"
        if close
        else "remove it (see TrainConfig in hba_sweep/config/train_config.py for the keys)."
    )


def _coerce(name: str, value: Any) -> Any:
    """Convert a YAML/CLI value to the field's type; raise ValueError with the expected type."""
    kind, optional = FIELD_KINDS[name]
    if value is None or (isinstance(value, str) and value.lower() in ("null", "~")):
        if optional:
            return None
        raise ValueError(f"must be a {kind}, not empty")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ValueError("must be true or false")
    if kind == "int":
        if isinstance(value, bool):
            raise ValueError("must be an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ValueError("must be an integer")
    if kind == "float":
        if isinstance(value, bool):
            raise ValueError("must be a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError("must be a number") from None
        if not math.isfinite(number):
            raise ValueError("must be a finite number")
        return number
    if isinstance(value, (dict, list)):
        raise ValueError("must be a string")
    return str(value)


def _normalise(
    raw: Mapping[str, Any], source: str, problems: list[str], notes: list[str] | None = None
) -> dict[str, Any]:
    """Rename aliases, read the published keys, reject unknown keys, coerce types."""
    values: dict[str, Any] = {}
    problems += check_training_mode(dict(raw), source)
    ignored = []
    for key, value in raw.items():
        if key in TRAIN_IGNORED:
            ignored.append(key)
            continue
        if key in TRAIN_CHECKED:
            continue
        name = ALIASES.get(key, key)
        if name not in FIELD_TYPES:
            problems.append(f"{source}: unknown key {key!r}. Fix: {_fix_for_unknown(key)}")
            continue
        if (key in EMPTY_IS_DEFAULT or name in EMPTY_IS_DEFAULT) and (value is None or value == ""):
            continue
        if name in ("wandb_project", "wandb_entity") and value == "":
            value = None
        try:
            if key in ("max_duration", "lr_warmup_duration") and value is not None:
                value = epoch_duration(value, key)
            if key == "cuda":
                value = published_device(value)
                values["cpu_fallback"] = True
            values[name] = _coerce(name, value)
        except ValueError as exc:
            problems.append(f"{source}: {key}={value!r} {exc}. Fix: give a valid value.")
    if ignored and notes is not None:
        notes.append(
            f"{source}: published keys with no effect here, ignored: "
            + "; ".join(f"{k} ({TRAIN_IGNORED[k]})" for k in ignored)
        )
    for key in LOWERCASE_CHOICES:
        if isinstance(values.get(key), str):
            values[key] = values[key].strip().lower()
    if "lr_scheduler" in values:
        values["lr_scheduler"] = SCHEDULER_NAMES.get(values["lr_scheduler"], values["lr_scheduler"])
    if "criterion" in values:
        crit = str(values["criterion"]).lower()
        values["criterion"] = CRITERION_NAMES.get(crit, crit)
    return values


def from_dict(
    raw: Mapping[str, Any], source: str = "<config>", check_files: bool = True, notes: list[str] | None = None
) -> TrainConfig:
    """Validate a mapping of study keys into a TrainConfig; raise ConfigError listing every problem.

    Published keys that have no effect here are appended to ``notes`` (if given), not refused.
    """
    problems: list[str] = []
    values = _normalise(raw, source, problems, notes)
    if problems:
        raise ConfigError("\n".join(problems))
    cfg = TrainConfig(**values)
    problems = check_values(cfg, source, check_files)
    if problems:
        raise ConfigError("\n".join(problems))
    return cfg


def resolve_paths(raw: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """Relative data paths in a config file name files next to it; a path found only from the
    working directory keeps that meaning (and one found nowhere is reported next to the file)."""
    return resolve_relative(raw, base, ALIASES, inputs=RELATIVE_PATHS)


def load_config(
    path: str | os.PathLike | None = None,
    overrides: list[str] | Mapping[str, Any] | None = None,
    check_files: bool = True,
) -> TrainConfig:
    """Load a YAML config (or defaults), apply overrides, validate."""
    return load_yaml_config(
        path,
        overrides,
        lambda raw, source, notes: from_dict(raw, source, check_files, notes),
        ALIASES,
        inputs=RELATIVE_PATHS,
    )


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    """Write the config as YAML (atomically)."""
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def run_name(cfg: TrainConfig) -> str:
    """The run directory name, built from the settings as the study does."""
    if cfg.run_name:
        return cfg.run_name
    backbone = cfg.backbone.replace("/", "-")
    name = f"cliphba_dora_{backbone}_r{cfg.rank}_v{cfg.vision_layers}_t{cfg.transformer_layers}_seed{cfg.random_seed}"
    if cfg.perturb_type == "none":
        return f"{name}_baseline"
    frac = "" if cfg.perturb_fraction == 1.0 else f"_f{cfg.perturb_fraction:g}"
    return f"{name}_{cfg.perturb_type}_e{cfg.perturb_epoch}_l{cfg.perturb_length}_ps{cfg.perturb_seed}{frac}"


def run_dir(cfg: TrainConfig) -> Path:
    """``save_path/<run name>/``."""
    return Path(cfg.save_path) / run_name(cfg)
