"""The training config's value checks: ranges, choices, the backbone's depth, the perturbation
window and the cross-field rules (the files a config names: hba_sweep.config.file_checks)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hba_sweep.config.file_checks import file_problems
from hba_sweep.foundation.errors import ConfigError
from hba_sweep.model.backbones import backbone_depths
from hba_sweep.perturbations import registered_types

if TYPE_CHECKING:  # the schema imports these checks; the checks need its type only
    from hba_sweep.config.train_config import TrainConfig

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


def check_values(cfg: TrainConfig, source: str, check_files: bool) -> list[str]:
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
        bad(
            "dora_alpha",
            "must be positive",
            "use a positive value, or leave it empty for the adapter's default (16 for hba_dora, rank for peft_dora).",
        )
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
        bad(
            "run_name",
            "is not a plain folder name (it would write outside save_path)",
            "use letters, digits, '_', '-', '.' without '/', '\\' or '..', e.g. my_run.",
        )
    if not str(cfg.device).startswith(("auto", "cpu", "cuda", "mps")):
        bad("device", "is not a device", "use auto, cpu, cuda or cuda:N.")
    if check_files:
        problems += file_problems(cfg, source)
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
        problems.append(
            f"{source}: vision_layers={cfg.vision_layers} is larger than {cfg.backbone}'s "
            f"{vision_depth} vision blocks. Fix: use at most {vision_depth}."
        )
    if cfg.transformer_layers > text_depth:
        problems.append(
            f"{source}: transformer_layers={cfg.transformer_layers} is larger than {cfg.backbone}'s "
            f"{text_depth} text blocks. Fix: use at most {text_depth}."
        )
    return problems


def _check_perturbation(cfg: TrainConfig, source: str) -> list[str]:
    types = registered_types()
    if cfg.perturb_type not in types:
        return [
            f"{source}: perturb_type={cfg.perturb_type!r} is not a known perturbation. "
            f"Fix: use one of {sorted(types)} or register your own (hba_sweep.perturbations.register)."
        ]
    problems = []
    if not 0.0 < cfg.perturb_fraction <= 1.0:
        problems.append(
            f"{source}: perturb_fraction={cfg.perturb_fraction!r} must be in (0, 1]. "
            "Fix: use 1 to perturb whole batches, or a fraction such as 0.5."
        )
    if cfg.perturb_type != "none":
        if cfg.perturb_length < 1:
            problems.append(
                f"{source}: perturb_length={cfg.perturb_length!r} must be at least 1. "
                "Fix: perturb for one epoch or more."
            )
        elif cfg.perturb_epoch + cfg.perturb_length > cfg.epochs:
            problems.append(
                f"{source}: perturb_epoch={cfg.perturb_epoch} + perturb_length={cfg.perturb_length} runs past "
                f"the last epoch ({cfg.epochs - 1}). Fix: start the window earlier, shorten it or raise epochs."
            )
    return problems
