"""One CLIP-HBA training run: ``run_training_experiment(config, report=None)``.

The story, top to bottom: seed, load data and split, build the model, set up (or restore)
optimizer, scheduler and RNG state, evaluate once (epoch -1), then per epoch train with the
perturbation strategy, evaluate, checkpoint, write the metrics row and report it.
"""

from __future__ import annotations

import csv
import io
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from hba_sweep import checkpoint as ckpt
from hba_sweep import prefix_cache
from hba_sweep.config import (FORK_MAY_CHANGE, RESUME_MAY_CHANGE, TrainConfig, run_dir, run_name, save_config,
                              split_sizes)
from hba_sweep.data.rdm_io import load_rdm
from hba_sweep.data.things import ThingsDataset
from hba_sweep.devices import resolve_device
from hba_sweep.errors import ConfigError
from hba_sweep.io_utils import atomic_write_text
from hba_sweep.model import CLIPHBA
from hba_sweep.perturbations import choose_perturbation_strategy, target_stats
from hba_sweep.rsa import behavioral_rsa

METRIC_COLUMNS = ["epoch", "train_loss", "val_loss", "behavioral_rsa_rho", "behavioral_rsa_p",
                  "perturbation_active", "lr", "epoch_seconds", "images_per_second", "inherited"]
Report = Callable[[dict, str], None]


# ---- data -------------------------------------------------------------------------------
@dataclass
class Images:
    """An image set the loop can feed: normalised batches, and the cached prefix if enabled."""

    dataset: ThingsDataset
    prefix: prefix_cache.CachedPrefix | None = None

    def inputs(self, model: CLIPHBA, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
        """What enters the adapted blocks: cached prefix rows, or the frozen prefix run now."""
        if self.prefix is not None:  # stored compactly (bf16 on CUDA); the adapted blocks compute in fp32/autocast
            return to_device(self.prefix.rows(idx), device).float()
        return model.vision_prefix(to_device(self.dataset.images(idx), device))


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host -> device copy; pinned and non-blocking on CUDA."""
    if device.type == "cuda":
        batch = batch.pin_memory()
    return batch.to(device, non_blocking=True)


def make_split(n: int, train_portion: float, seed: int) -> tuple[list[int], list[int]]:
    """``train_portion`` of the rows for training, the rest for validation, drawn with ``seed``."""
    order = np.random.default_rng(seed).permutation(n)
    n_train, _ = split_sizes(n, train_portion)
    return sorted(order[:n_train].tolist()), sorted(order[n_train:].tolist())


def load_images(cfg: TrainConfig, annotations: str, img_dir: str, image_size: int) -> ThingsDataset:
    return ThingsDataset(annotations, img_dir, image_size, in_memory=cfg.keep_images_in_memory)


def attach_prefix(images: Images, model: CLIPHBA, cfg: TrainConfig, device: torch.device,
                  dtype: torch.dtype, log: Callable[[str], None]) -> None:
    """Compute (or load) the frozen vision prefix of every image once."""
    ds = images.dataset
    root = cfg.cache_dir if cfg.cache_dir is not None else Path(cfg.save_path) / "prefix_cache"
    images.prefix = prefix_cache.frozen_prefix(
        model, ds.image_paths, lambda: ds.images, root, dtype, device, cfg.batch_size, lambda: autocast(device, cfg),
        on_compute=lambda n: log(f"computing the frozen prefix of {n} images ({ds.annotations_file.name}) once"))


# ---- precision and device ---------------------------------------------------------------
def autocast(device: torch.device, cfg: TrainConfig) -> torch.autocast:
    """bf16 autocast on CUDA unless ``precision: fp32``; plain fp32 on CPU."""
    enabled = device.type == "cuda" and cfg.precision in ("auto", "bf16")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def cache_dtype(device: torch.device, cfg: TrainConfig) -> torch.dtype:
    if cfg.cache_dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" and cfg.precision != "fp32" else torch.float32
    return getattr(torch, cfg.cache_dtype)


PREFIX_STEM = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "patch_dropout")


def caching_allowed(cfg: TrainConfig, model: CLIPHBA) -> tuple[bool, str]:
    """Whether the frozen prefix may be cached, and why not."""
    if not cfg.cache_frozen_prefix:
        return False, "cache_frozen_prefix is false"
    if model.vision_split == 0:
        return False, "every vision block is adapted: there is no frozen prefix"
    if any(p.requires_grad for n, p in model.named_parameters() if _in_prefix(n, model.vision_split)):
        return False, "part of the vision prefix is trainable"
    return True, ""


def _in_prefix(name: str, split: int) -> bool:
    """Whether a parameter belongs to the vision blocks before the first adapted one."""
    parts = name.split(".")
    if parts[:2] != ["clip", "visual"]:
        return False
    if parts[2] in PREFIX_STEM:
        return True
    return parts[2:4] == ["transformer", "resblocks"] and int(parts[4]) < split


# ---- optimisation -----------------------------------------------------------------------
def make_optimizer(cfg: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.opt == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Per-epoch schedule: none, cosine over all epochs, or linear warm-up then cosine."""
    if cfg.lr_scheduler == "none":
        return None
    warm = cfg.lr_warmup_epochs if cfg.lr_scheduler == "cosine_warmup" else 0

    def factor(epoch: int) -> float:
        if epoch < warm:
            return (epoch + 1) / (warm + 1)
        progress = (epoch - warm) / max(1, cfg.epochs - warm)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ---- one epoch --------------------------------------------------------------------------
def train_one_epoch(model: CLIPHBA, train: Images, targets: torch.Tensor, order: torch.Tensor, strategy: Any,
                    optimizer: torch.optim.Optimizer, epoch: int, cfg: TrainConfig, device: torch.device,
                    progress: Callable[[int], None]) -> float:
    """One pass over the training rows in ``order``; returns the mean batch loss."""
    model.train()
    active = strategy.is_active_epoch(epoch)
    losses = []
    for batch_idx, start in enumerate(range(0, len(order), cfg.batch_size)):
        idx = order[start:start + cfg.batch_size]
        batch_targets = to_device(targets[idx], device)
        with autocast(device, cfg):
            if active:
                tokens, batch_targets = perturbed_inputs(model, train, idx, batch_targets, strategy, epoch,
                                                         batch_idx, device)
            else:
                tokens = train.inputs(model, idx, device)
            loss = nn.functional.mse_loss(model.forward_from_prefix(tokens).float(), batch_targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
        progress(len(idx))
    return float(torch.stack(losses).mean())


def perturbed_inputs(model: CLIPHBA, train: Images, idx: torch.Tensor, targets: torch.Tensor, strategy: Any,
                     epoch: int, batch_idx: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the strategy to the batch; replaced images take the full (uncached) path."""
    images = to_device(train.dataset.images(idx), device)
    new_images, new_targets = strategy.apply_to_batch(images, targets, device, epoch, batch_idx)
    if train.prefix is None:
        return model.vision_prefix(new_images), new_targets
    tokens = train.inputs(model, idx, device)
    if new_images is not images:
        changed = (new_images != images).flatten(1).any(dim=1)
        if changed.any():
            tokens[changed] = model.vision_prefix(new_images[changed]).to(tokens.dtype)
    return tokens, new_targets


@torch.no_grad()
def predict(model: CLIPHBA, images: Images, cfg: TrainConfig, device: torch.device,
            indices: list[int] | None = None) -> torch.Tensor:
    """66-d predictions for ``indices`` (all images by default), in eval mode, on CPU."""
    model.eval()
    rows = torch.arange(len(images.dataset)) if indices is None else torch.as_tensor(indices)
    out = []
    for start in range(0, len(rows), cfg.batch_size):
        idx = rows[start:start + cfg.batch_size]
        with autocast(device, cfg):
            out.append(model.forward_from_prefix(images.inputs(model, idx, device)).float().cpu())
    return torch.cat(out) if out else torch.empty(0, 66)


def evaluate(model: CLIPHBA, train: Images, val_idx: list[int], rsa: tuple[Images, np.ndarray] | None,
             cfg: TrainConfig, device: torch.device) -> dict[str, float]:
    """Validation loss and (if enabled) behavioural RSA."""
    preds = predict(model, train, cfg, device, val_idx)
    val_loss = float(nn.functional.mse_loss(preds, train.dataset.targets[val_idx]))
    rho = p = float("nan")
    if rsa is not None:
        rho, p = behavioral_rsa(predict(model, rsa[0], cfg, device).numpy(), rsa[1],
                                cfg.model_rdm_distance_metric, cfg.rsa_similarity_metric)
    return {"val_loss": val_loss, "behavioral_rsa_rho": float(rho), "behavioral_rsa_p": float(p)}


# ---- bookkeeping ------------------------------------------------------------------------
def write_metrics(path: Path, rows: list[dict]) -> None:
    """Rewrite metrics.csv atomically from the rows (one per epoch, no duplicates)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_compatible(cfg: TrainConfig, source_config: dict, may_change: set[str], what: str, source: Path) -> None:
    """A resumed or forked run must keep the settings that define the computation so far."""
    differ = sorted(k for k, v in cfg.to_dict().items()
                    if k not in may_change and k in source_config and source_config[k] != v)
    if differ:
        detail = ", ".join(f"{k}: {source_config[k]!r} -> {getattr(cfg, k)!r}" for k in differ)
        raise ConfigError(f"{what} from {source}: settings differ ({detail}). Fix: use the source run's values "
                          "or start a new run.")


def make_logger(cfg: TrainConfig) -> Callable[[str], None]:
    def log(message: str) -> None:
        if cfg.progress:
            print(f"[{run_name(cfg)}] {message}", file=sys.stderr, flush=True)
    return log


def progress_bar(cfg: TrainConfig, total: int, epoch: int):
    """A tqdm bar on a terminal, else a no-op counter."""
    if cfg.progress and sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, desc=f"epoch {epoch}", unit="img", leave=False)
    return None


def epoch_summary(row: dict) -> str:
    train = "" if row["train_loss"] is None else f"train {row['train_loss']:.4g}  "
    rsa = "" if math.isnan(row["behavioral_rsa_rho"]) else f"  rsa {row['behavioral_rsa_rho']:.3f}"
    flag = "  [perturbed]" if row["perturbation_active"] else ""
    return f"epoch {row['epoch']:>3}  {train}val {row['val_loss']:.4g}{rsa}  ({row['epoch_seconds']:.1f}s){flag}"


def build_model_and_data(cfg: TrainConfig, device: torch.device, log: Callable[[str], None]
                         ) -> tuple[CLIPHBA, Images, tuple[Images, np.ndarray] | None]:
    """The model, the training images and (if enabled) the RSA images with their reference RDM,
    with the frozen prefix attached where caching is exact."""
    model = CLIPHBA(backbone=cfg.backbone, pretrained=cfg.pretrained, vision_layers=cfg.vision_layers,
                    transformer_layers=cfg.transformer_layers, rank=cfg.rank, dora_alpha=cfg.alpha,
                    dora_dropout=cfg.dora_dropout, adapter=cfg.adapter).to(device)
    train = Images(load_images(cfg, cfg.img_annotations_file, cfg.img_dir, model.image_size))
    rsa = None
    if cfg.behavioral_rsa:
        rsa_images = Images(load_images(cfg, cfg.rsa_annotations_file, cfg.rsa_img_dir, model.image_size))
        rsa = (rsa_images, load_rdm(cfg.behavioral_rdm_file, n=len(rsa_images.dataset)))
    model.cache_text = cfg.cache_frozen_prefix  # the 66 prompts' frozen text blocks: once, truncated
    use_cache, why = caching_allowed(cfg, model)
    if not use_cache:
        log(f"frozen-prefix cache off: {why}")
        return model, train, rsa
    for images in [train] + ([rsa[0]] if rsa else []):
        attach_prefix(images, model, cfg, device, cache_dtype(device, cfg), log)
    return model, train, rsa


# ---- the run ----------------------------------------------------------------------------
def run_training_experiment(config: TrainConfig, report: Report | None = None) -> dict:
    """Train one run with the study's semantics; return a summary of the last epoch.

    Writes ``save_path/<run name>/`` (config.yaml, split.json, metrics.csv, checkpoints/) and
    calls ``report(metrics, checkpoint_dir)`` after the initial evaluation and every epoch.
    """
    cfg = config
    out = run_dir(cfg)
    log = make_logger(cfg)
    device = resolve_device(cfg.device)
    if device.type == "cuda" and cfg.precision != "fp32":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    source, source_kind = start_source(cfg, out)
    seed_everything(cfg.random_seed)
    model, train, rsa = build_model_and_data(cfg, device, log)

    optimizer = make_optimizer(cfg, model.adapter_parameters())
    scheduler = make_scheduler(cfg, optimizer)
    if source is None:
        state, history = fresh_state(cfg, len(train.dataset)), []
    else:
        state, history = restore(source, source_kind, cfg, model, optimizer, scheduler)
        log(f"{source_kind} from {source} (epoch {state.epoch})")
    shuffle = torch.Generator().manual_seed(cfg.random_seed)
    shuffle.set_state(state.shuffle_generator)
    targets = train.dataset.targets
    train_idx, val_idx = state.train_indices, state.val_indices
    mean, std = target_stats(targets[train_idx])  # scalar mean/std of all training target values
    strategy = choose_perturbation_strategy(cfg.perturb_type, cfg.perturb_epoch, cfg.perturb_length, cfg.perturb_seed,
                                            target_mean=mean, target_std=std, perturb_fraction=cfg.perturb_fraction)
    prepare_run_dir(cfg, out, train.dataset.names, train_idx, val_idx)
    train_rows = torch.as_tensor(train_idx)

    def finish_epoch(epoch: int, metrics: dict) -> None:
        state.epoch = epoch
        state.optimizer = optimizer.state_dict()
        state.scheduler = scheduler.state_dict() if scheduler else None
        state.shuffle_generator = shuffle.get_state()
        state.rng = ckpt.capture_rng()
        history.append(metrics)
        meta = {"run_name": run_name(cfg), "adapter": model.adapter, "config": cfg.to_dict(), "metrics": history}
        ckpt_dir = ckpt.save_checkpoint(out, model.adapter_state_dict(), state, meta)
        write_metrics(out / "metrics.csv", history)
        log(epoch_summary(metrics))
        if report is not None:
            report(dict(metrics), str(ckpt_dir))

    if state.epoch == -2:  # a fresh run: the initial evaluation is epoch -1
        started = time.perf_counter()
        scores = evaluate(model, train, val_idx, rsa, cfg, device)
        state.best_val_loss = scores["val_loss"]
        finish_epoch(-1, metrics_row(-1, None, scores, False, optimizer, time.perf_counter() - started, 0))

    patience = cfg.early_stopping_patience or 0
    for epoch in range(state.epoch + 1, cfg.epochs):
        if patience and state.epochs_without_improvement >= patience:
            log(f"early stopping: no val_loss improvement for {patience} epochs")
            break
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        order = train_rows[torch.randperm(len(train_rows), generator=shuffle)]
        bar = progress_bar(cfg, len(order), epoch)
        train_loss = train_one_epoch(model, train, targets, order, strategy, optimizer, epoch, cfg, device,
                                     bar.update if bar else lambda n: None)
        if bar:
            bar.close()
        if scheduler:
            scheduler.step()
        scores = evaluate(model, train, val_idx, rsa, cfg, device)
        if scores["val_loss"] < state.best_val_loss:
            state.best_val_loss, state.epochs_without_improvement = scores["val_loss"], 0
        else:
            state.epochs_without_improvement += 1
        seconds = time.perf_counter() - started
        finish_epoch(epoch, metrics_row(epoch, train_loss, scores, strategy.is_active_epoch(epoch), optimizer,
                                        seconds, len(order), lr=lr))
    return {"run_dir": str(out), **history[-1]}


def metrics_row(epoch: int, train_loss: float | None, scores: dict, active: bool, optimizer: torch.optim.Optimizer,
                seconds: float, n_images: int, lr: float | None = None) -> dict:
    return {"epoch": epoch, "train_loss": train_loss, **scores, "perturbation_active": bool(active),
            "lr": optimizer.param_groups[0]["lr"] if lr is None else lr, "epoch_seconds": seconds,
            "images_per_second": n_images / seconds if seconds > 0 else 0.0, "inherited": False}


def fresh_state(cfg: TrainConfig, n_images: int) -> ckpt.TrainingState:
    """The state before the initial evaluation (epoch -2): a new seeded split and shuffle generator."""
    train_idx, val_idx = make_split(n_images, cfg.train_portion, cfg.random_seed)
    return ckpt.TrainingState(epoch=-2, optimizer={}, scheduler=None,
                              shuffle_generator=torch.Generator().manual_seed(cfg.random_seed).get_state(),
                              train_indices=train_idx, val_indices=val_idx)


def start_source(cfg: TrainConfig, out: Path) -> tuple[Path | None, str]:
    """Where the run starts from: None (fresh), a checkpoint to resume, or one to fork from."""
    if cfg.resume_from is not None:
        return ckpt.resolve_checkpoint(cfg.resume_from), "resumed"
    if cfg.init_from is not None:
        return ckpt.resolve_checkpoint(cfg.init_from, cfg.init_epoch), "forked"
    if ckpt.list_epochs(out):
        raise ConfigError(f"{out}: this run already has checkpoints. Fix: add --resume (resume_from: {out}) to "
                          "continue it, choose another save_path/run_name, or delete the directory.")
    return None, ""


def restore(source: Path, kind: str, cfg: TrainConfig, model: CLIPHBA, optimizer: torch.optim.Optimizer,
            scheduler: Any) -> tuple[ckpt.TrainingState, list[dict]]:
    """Load a checkpoint's adapters and full state into this run."""
    adapters, state, meta = ckpt.load_checkpoint(source)
    check_compatible(cfg, meta["config"], RESUME_MAY_CHANGE if kind == "resumed" else FORK_MAY_CHANGE, kind, source)
    model.load_adapter_state_dict(adapters)
    optimizer.load_state_dict(state.optimizer)
    if scheduler is not None and state.scheduler is not None:
        scheduler.load_state_dict(state.scheduler)
    ckpt.restore_rng(state.rng)
    history = [dict(row) for row in meta["metrics"]]
    if kind == "forked":
        history = [{**row, "inherited": True} for row in history]
    return state, history


def prepare_run_dir(cfg: TrainConfig, out: Path, names: list[str], train_idx: list[int], val_idx: list[int]) -> None:
    """config.yaml and split.json (the split is reused by every fork of the run)."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    split = {"train": [names[i] for i in train_idx], "val": [names[i] for i in val_idx],
             "train_indices": train_idx, "val_indices": val_idx}
    atomic_write_text(out / "split.json", json.dumps(split))
