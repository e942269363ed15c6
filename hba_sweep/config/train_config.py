"""The training configuration: one schema, the published study's YAML keys, strict validation.

``load_config(path, overrides)`` reads a YAML file, applies ``--set key=value`` overrides and
returns a validated :class:`TrainConfig`. Every problem is collected and raised together as a
:class:`ConfigError` naming the source, the key, the value and the fix, before any model is built.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import functools
import math
import os
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from hba_sweep.foundation.errors import ConfigError
from hba_sweep.foundation.devices import published_device
from hba_sweep.foundation.io_utils import atomic_write_text
from hba_sweep.foundation.yaml_io import read_yaml
from hba_sweep.model.adapters import default_alpha
from hba_sweep.model.backbones import backbone_depths
from hba_sweep.perturbations import registered_types
from hba_sweep.config.published_keys import TRAIN_CHECKED, TRAIN_IGNORED, check_training_mode, epoch_duration

# Keys of the published study's YAML files that name a field of TrainConfig.
ALIASES = {
    "clip_hba_backbone": "backbone",
    "max_duration": "epochs",
    "rsa_things_img_dir": "rsa_img_dir",
    "behavioral_rdm48_file": "behavioral_rdm_file",
    "checkpoint_path": "save_path",
    "cuda": "device",
    "lr_warmup_duration": "lr_warmup_epochs",
}
# Published keys whose empty value means "unset": the default applies (the published config leaves
# perturb_epoch/perturb_length/perturb_seed empty for a baseline).
EMPTY_IS_DEFAULT = {"perturb_epoch", "perturb_length", "perturb_seed", "lr_warmup_epochs", "max_duration"}

CHOICES = {
    "adapter": ("hba_dora", "peft_dora"),
    "opt": ("adamw", "sgd"),
    "lr_scheduler": ("none", "cosineannealinglr", "cosineannealinglrwithwarmup"),
    "criterion": ("mse",),
    "dataset_type": ("things",),
    "model_rdm_distance_metric": ("pearson", "cosine", "euclidean"),
    "rsa_similarity_metric": ("spearman", "pearson", "kendall"),
    "precision": ("fp32", "bf16", "auto"),
    "fork_early_stopping": ("reset", "inherit"),
    "cache_dtype": ("auto", "float32", "bfloat16"),
}

# Spellings of the study's criterion names accepted for ``criterion: mse``.
CRITERION_NAMES = {"mse": "mse", "mseloss": "mse", "mean_squared_error": "mse"}
# Earlier names of the published schedulers.
SCHEDULER_NAMES = {"cosine": "cosineannealinglr", "cosine_warmup": "cosineannealinglrwithwarmup"}
LOWERCASE_CHOICES = ("opt", "lr_scheduler", "precision", "fork_early_stopping", "dataset_type")

PERTURB_FIELDS = ("perturb_type", "perturb_epoch", "perturb_length", "perturb_seed", "perturb_fraction")
# Settings that do not change what a run computes so far: a resumed run may change them, a fork
# may also change its perturbation.
RESUME_MAY_CHANGE = {"epochs", "early_stopping_patience", "progress", "device", "resume_from", "num_workers",
                     "save_path", "run_name", "precision", "cache_frozen_prefix", "cache_dtype", "cache_dir",
                     "prefix_on_gpu", "keep_images_in_memory", "init_from", "init_epoch", "cpu_fallback", "wandb_project",
                     "wandb_entity", "fork_early_stopping", "baseline_checkpoint_path"}
FORK_MAY_CHANGE = RESUME_MAY_CHANGE | set(PERTURB_FIELDS)

PATH_FIELDS = ("img_dir", "img_annotations_file", "rsa_annotations_file", "rsa_img_dir", "behavioral_rdm_file")
# Paths a config file names relative to itself (the data paths, a pinned split, a baseline run).
RELATIVE_PATHS = PATH_FIELDS + ("split_file", "baseline_checkpoint_path")


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of one training run, with the defaults of the published study."""

    # model
    backbone: str = "ViT-L/14"
    pretrained: str = "openai"
    vision_layers: int = 2
    transformer_layers: int = 1
    adapter: str = "hba_dora"  # the published DoRA; "peft_dora": peft's DoRA (hba_sweep/model/adapters.py)
    rank: int = 32
    dora_alpha: float | None = None  # None: the adapter's default (hba_dora 16, published; peft_dora = rank)
    dora_dropout: float = 0.0  # as published in effect (the published training never applied its 0.1)
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
    # speed (see the performance section of README)
    cache_frozen_prefix: bool = True
    precision: str = "fp32"  # as published; bf16: autocast, bf16 prefix cache and TF32 on CUDA; auto: bf16 on CUDA
    cache_dtype: str = "auto"  # frozen-prefix cache: bfloat16 when precision resolves to bf16, else float32
    cache_dir: str | None = None  # None: <save_path>/prefix_cache
    prefix_on_gpu: bool = True  # on CUDA: the cached prefix held in GPU memory when it takes <= half the free memory
    keep_images_in_memory: bool = True
    progress: bool = True

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed, validated again."""
        return from_dict({**self.to_dict(), **changes}, source="<replace>")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def alpha(self) -> float:
        """DoRA scaling numerator (scaling = alpha / rank): ``dora_alpha``, else the adapter's default."""
        return default_alpha(self.adapter, self.rank) if self.dora_alpha is None else float(self.dora_alpha)


FIELD_TYPES = {f.name: f.type for f in fields(TrainConfig)}
FIELD_NAMES = tuple(FIELD_TYPES)
DEFAULTS = TrainConfig()


def _fix_for_unknown(key: str) -> str:
    close = difflib.get_close_matches(key, list(FIELD_NAMES) + list(ALIASES), n=1)
    return f"did you mean {close[0]!r}?" if close else "remove it (see TrainConfig in hba_sweep/config/train_config.py for the keys)."


def _coerce(name: str, value: Any) -> Any:
    """Convert a YAML/CLI value to the field's type; raise ValueError with the expected type."""
    kind = FIELD_TYPES[name].replace(" | None", "")
    optional = "None" in FIELD_TYPES[name]
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


def _normalise(raw: Mapping[str, Any], source: str, problems: list[str],
               notes: list[str] | None = None) -> dict[str, Any]:
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
        notes.append(f"{source}: published keys with no effect here, ignored: "
                     + "; ".join(f"{k} ({TRAIN_IGNORED[k]})" for k in ignored))
    for key in LOWERCASE_CHOICES:
        if isinstance(values.get(key), str):
            values[key] = values[key].strip().lower()
    if "lr_scheduler" in values:
        values["lr_scheduler"] = SCHEDULER_NAMES.get(values["lr_scheduler"], values["lr_scheduler"])
    if "criterion" in values:
        crit = str(values["criterion"]).lower()
        values["criterion"] = CRITERION_NAMES.get(crit, crit)
    return values


def _check_values(cfg: TrainConfig, source: str, check_files: bool) -> list[str]:
    """Range, choice, cross-field and file checks. Returns the problems found."""
    problems: list[str] = []

    def bad(key: str, problem: str, fix: str) -> None:
        problems.append(f"{source}: {key}={getattr(cfg, key)!r} {problem}. Fix: {fix}")

    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            bad(key, "is not a known choice", f"use one of {list(allowed)}.")
    for key in ("rank", "epochs", "batch_size"):
        if getattr(cfg, key) < 1:
            bad(key, "must be at least 1", f"set {key} to 1 or more.")
    for key in ("vision_layers", "transformer_layers", "num_workers", "lr_warmup_epochs", "perturb_epoch"):
        if getattr(cfg, key) < 0:
            bad(key, "must not be negative", f"set {key} to 0 or more.")
    if cfg.lr <= 0:
        bad("lr", "must be positive", "use a learning rate such as 3e-4.")
    if cfg.weight_decay < 0:
        bad("weight_decay", "must not be negative", "use 0 or a small positive value.")
    if not 0.0 <= cfg.dora_dropout < 1.0:
        bad("dora_dropout", "must be in [0, 1)", "use 0 (as published) or a dropout probability such as 0.1.")
    if cfg.dora_alpha is not None and cfg.dora_alpha <= 0:
        bad("dora_alpha", "must be positive", "use a positive value, or leave it empty for the adapter's default "
            "(16 for hba_dora, rank for peft_dora).")
    if not 0.0 < cfg.train_portion < 1.0:
        bad("train_portion", "must be between 0 and 1", "use a fraction such as 0.8.")
    if cfg.early_stopping_patience is not None and cfg.early_stopping_patience < 0:
        bad("early_stopping_patience", "must not be negative", "use 0 (never stop early) or a number of epochs.")
    if cfg.vision_layers + cfg.transformer_layers == 0:
        bad("vision_layers", "and transformer_layers are both 0: nothing would train", "adapt at least one block.")
    problems += _check_backbone(cfg, source)
    problems += _check_perturbation(cfg, source)
    if cfg.lr_scheduler == "cosineannealinglrwithwarmup" and cfg.lr_warmup_epochs >= cfg.epochs:
        bad("lr_warmup_epochs", f"must be below epochs ({cfg.epochs})", "shorten the warm-up.")
    if (cfg.init_from is None) != (cfg.init_epoch is None):
        bad("init_from", "and init_epoch must be given together", "set both (fork from a run's epoch) or neither.")
    if cfg.init_epoch is not None and cfg.init_epoch < 0:
        bad("init_epoch", "must not be negative", "name an epoch the source run has finished.")
    if cfg.run_name and not _is_plain_name(cfg.run_name):
        bad("run_name", "is not a plain folder name (it would write outside save_path)",
            "use letters, digits, '_', '-', '.' without '/', '\\' or '..', e.g. my_run.")
    if not str(cfg.device).startswith(("auto", "cpu", "cuda", "mps")):
        bad("device", "is not a device", "use auto, cpu, cuda or cuda:N.")
    if check_files:
        problems += _check_files(cfg, source)
    return problems


def _is_plain_name(name: str) -> bool:
    """A single path component that stays inside its parent folder."""
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0")


def _check_backbone(cfg: TrainConfig, source: str) -> list[str]:
    try:
        vision_depth, text_depth = backbone_depths(cfg.backbone)
    except ConfigError as exc:
        return [f"{source}: {exc}"]
    problems = []
    if cfg.vision_layers > vision_depth:
        problems.append(f"{source}: vision_layers={cfg.vision_layers} is larger than {cfg.backbone}'s "
                        f"{vision_depth} vision blocks. Fix: use at most {vision_depth}.")
    if cfg.transformer_layers > text_depth:
        problems.append(f"{source}: transformer_layers={cfg.transformer_layers} is larger than {cfg.backbone}'s "
                        f"{text_depth} text blocks. Fix: use at most {text_depth}.")
    return problems


def _check_perturbation(cfg: TrainConfig, source: str) -> list[str]:
    types = registered_types()
    if cfg.perturb_type not in types:
        return [f"{source}: perturb_type={cfg.perturb_type!r} is not a known perturbation. "
                f"Fix: use one of {sorted(types)} or register your own (hba_sweep.perturbations.register)."]
    problems = []
    if not 0.0 < cfg.perturb_fraction <= 1.0:
        problems.append(f"{source}: perturb_fraction={cfg.perturb_fraction!r} must be in (0, 1]. "
                        "Fix: use 1 to perturb whole batches, or a fraction such as 0.5.")
    if cfg.perturb_type != "none":
        if cfg.perturb_length < 1:
            problems.append(f"{source}: perturb_length={cfg.perturb_length!r} must be at least 1. "
                            "Fix: perturb for one epoch or more.")
        elif cfg.perturb_epoch + cfg.perturb_length > cfg.epochs:
            problems.append(
                f"{source}: perturb_epoch={cfg.perturb_epoch} + perturb_length={cfg.perturb_length} runs past "
                f"the last epoch ({cfg.epochs - 1}). Fix: start the window earlier, shorten it or raise epochs."
            )
    return problems


def split_sizes(n: int, train_portion: float) -> tuple[int, int]:
    """(training, validation) image counts of a split of ``n`` rows: ``int(train_portion * n)`` for
    training, as the published ``random_split`` sizes (1444/362 of 1806)."""
    n_train = int(train_portion * n)
    return n_train, n - n_train


@functools.lru_cache(maxsize=64)
def _csv_rows(path: str, mtime_ns: int, size: int) -> int | None:
    """Data rows of a CSV (blank lines left out); None if it cannot be read (the loader says why)."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return max(0, sum(1 for row in csv.reader(fh) if any(cell.strip() for cell in row)) - 1)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None


def _check_split(cfg: TrainConfig, source: str) -> list[str]:
    """Both sides of the train/validation split must hold at least one image."""
    path = cfg.img_annotations_file
    st = os.stat(path)
    n = _csv_rows(os.path.abspath(path), st.st_mtime_ns, st.st_size)
    if not n:  # unreadable or empty: the CSV loader reports it with the row and column
        return []
    n_train, n_val = split_sizes(n, cfg.train_portion)
    if n_train and n_val:
        return []
    fix = ("add rows to the file (at least 2 images)" if n < 2 else
           f"add rows, or set train_portion so that both sides get an image (e.g. 0.5 for {n} images)")
    return [f"{source}: img_annotations_file={path!r} has {n} image(s); train_portion={cfg.train_portion} gives "
            f"{n_train} training and {n_val} validation image(s), and neither may be empty. Fix: {fix}."]


def _check_files(cfg: TrainConfig, source: str) -> list[str]:
    needed = {"img_dir": "dir", "img_annotations_file": "file"}
    if cfg.behavioral_rsa:
        needed.update(rsa_annotations_file="file", rsa_img_dir="dir", behavioral_rdm_file="file")
    problems = []
    for key, kind in needed.items():
        value = getattr(cfg, key)
        if value is None:
            hint = " or set behavioral_rsa: false" if key.startswith(("rsa", "behavioral")) else ""
            problems.append(f"{source}: {key} is missing. Fix: give the path of the {kind}{hint}.")
        elif kind == "file" and not os.path.isfile(value):
            problems.append(f"{source}: {key}={value!r}: no such file. Fix: correct the path.")
        elif kind == "dir" and not os.path.isdir(value):
            problems.append(f"{source}: {key}={value!r}: no such directory. Fix: correct the path.")
    if cfg.img_annotations_file is not None and os.path.isfile(cfg.img_annotations_file) and cfg.split_file is None:
        problems += _check_split(cfg, source)
    if cfg.split_file is not None and not os.path.isfile(cfg.split_file):
        problems.append(f"{source}: split_file={cfg.split_file!r}: no such file. Fix: give a JSON/CSV list of "
                        "validation image names or a published dataset_split_indices.pth, or remove the key.")
    if uses_baseline_path(cfg) and not os.path.isdir(str(cfg.baseline_checkpoint_path)):
        problems.append(f"{source}: baseline_checkpoint_path={cfg.baseline_checkpoint_path!r}: no such directory "
                        f"(perturb_epoch={cfg.perturb_epoch} forks from its epoch {cfg.perturb_epoch - 1}). Fix: give "
                        "the baseline run's folder (a published one or one of ours), or set perturb_epoch: 0.")
    return problems


def uses_baseline_path(cfg: TrainConfig) -> bool:
    """Whether the run forks from ``baseline_checkpoint_path`` (published: only when perturb_epoch > 0)."""
    return (bool(cfg.baseline_checkpoint_path) and cfg.perturb_epoch > 0 and cfg.init_from is None
            and cfg.resume_from is None)


def from_dict(raw: Mapping[str, Any], source: str = "<config>", check_files: bool = True,
              notes: list[str] | None = None) -> TrainConfig:
    """Validate a mapping of study keys into a TrainConfig; raise ConfigError listing every problem.

    Published keys that have no effect here are appended to ``notes`` (if given), not refused.
    """
    problems: list[str] = []
    values = _normalise(raw, source, problems, notes)
    if problems:
        raise ConfigError("\n".join(problems))
    cfg = TrainConfig(**values)
    problems = _check_values(cfg, source, check_files)
    if problems:
        raise ConfigError("\n".join(problems))
    return cfg


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` from ``--set`` -> a dict; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected key=value. Fix: write e.g. --set epochs=6.")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def resolve_paths(raw: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """Relative data paths in a config file name files next to it; a path found only from the
    working directory keeps that meaning (and one found nowhere is reported next to the file)."""
    out = dict(raw)
    for key, value in raw.items():
        name = ALIASES.get(key, key)
        if name in RELATIVE_PATHS and isinstance(value, str) and value and not os.path.isabs(value):
            if (base / value).exists() or not os.path.exists(value):
                out[key] = os.path.normpath(base / value)
    return out


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | Mapping[str, Any] | None = None,
                check_files: bool = True) -> TrainConfig:
    """Load a YAML config (or defaults), apply overrides, validate."""
    raw: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        raw = resolve_paths(read_yaml(path), Path(path).parent)
        source = str(path)
    extra = parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides or {})
    if extra:
        source = f"{source} (with --set {', '.join(f'{k}={v}' for k, v in extra.items())})"
    overridden = {ALIASES.get(k, k) for k in extra}
    raw = {k: v for k, v in raw.items() if ALIASES.get(k, k) not in overridden}  # --set wins over any spelling
    notes: list[str] = []
    cfg = from_dict({**raw, **extra}, source=source, check_files=check_files, notes=notes)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return cfg


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
    return (f"{name}_{cfg.perturb_type}_e{cfg.perturb_epoch}_l{cfg.perturb_length}"
            f"_ps{cfg.perturb_seed}{frac}")


def run_dir(cfg: TrainConfig) -> Path:
    """``save_path/<run name>/``."""
    return Path(cfg.save_path) / run_name(cfg)
