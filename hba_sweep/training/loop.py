"""One CLIP-HBA training run: ``run_training_experiment(config, report=None)``.

The story, top to bottom: seed, load data and split, build the model, set up (or restore, see
hba_sweep.training.run_start) optimizer, scheduler and RNG state, evaluate once (epoch -1; a fork re-evaluates its start),
then per epoch train with the perturbation strategy, evaluate, checkpoint, write the metrics
row and report it; stop early after ``early_stopping_patience`` epochs without improvement.
The run ends with a status (:func:`run_status`): ``finished``, ``early_stopped``, ``diverged``
(a non-finite loss or prediction: that epoch is recorded and the run stops, without an error, so
a sweep does not retry it) or, for a perturbed run stopped before its window ended,
``window_incomplete``.
"""

from __future__ import annotations

import csv
import io
import json
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

from hba_sweep.artifacts import checkpoint as ckpt
from hba_sweep.training import prefix_cache
from hba_sweep.config import TrainConfig, run_dir, run_name, save_config
from hba_sweep.data.rdm_io import load_rdm
from hba_sweep.data.things import ThingsDataset
from hba_sweep.foundation.devices import resolve_device
from hba_sweep.foundation.io_utils import atomic_write_text
from hba_sweep.foundation.safe_paths import ensure_inside, make_dirs
from hba_sweep.model import CLIPHBA
from hba_sweep.perturbations import choose_perturbation_strategy, target_stats
from hba_sweep.rsa import behavioral_rsa, compute_model_rdm
from hba_sweep.training.run_start import start_source, start_state
from hba_sweep.training.split import SplitRecord, epoch_order, write_split_json
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR
from tqdm import tqdm

METRIC_COLUMNS = ["epoch", "train_loss", "val_loss", "behavioral_rsa_rho", "behavioral_rsa_p",
                  "target_rsa_rho", "target_rsa_p", "perturbation_active", "lr", "epoch_seconds",
                  "images_per_second", "inherited", "diverged"]
STATUS_FILE = "run_status.json"
Report = Callable[[dict, str], None]


# ---- data -------------------------------------------------------------------------------
@dataclass
class Images:
    """An image set the loop can feed: normalised batches, and the cached prefix if enabled."""

    dataset: ThingsDataset
    prefix: prefix_cache.CachedPrefix | prefix_cache.DevicePrefix | None = None

    def inputs(self, model: CLIPHBA, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
        """What enters the adapted blocks: cached prefix rows, or the frozen prefix run now."""
        if self.prefix is not None:  # stored compactly (bf16 on CUDA); the adapted blocks compute in fp32/autocast
            return to_device(self.prefix.rows(idx), device).float()
        return model.vision_prefix(to_device(self.dataset.images(idx), device))


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host -> device copy; pinned and non-blocking on CUDA (a batch already on a GPU just moves)."""
    if batch.device.type != "cpu":
        return batch.to(device)
    if device.type == "cuda":
        batch = batch.pin_memory()
    return batch.to(device, non_blocking=True)


def load_images(cfg: TrainConfig, annotations: str, img_dir: str, image_size: int) -> ThingsDataset:
    return ThingsDataset(annotations, img_dir, image_size, in_memory=cfg.keep_images_in_memory)


def attach_prefix(images: Images, model: CLIPHBA, cfg: TrainConfig, device: torch.device,
                  dtype: torch.dtype, log: Callable[[str], None]) -> None:
    """Compute (or load) the frozen vision prefix of every image once."""
    ds = images.dataset
    root = cfg.cache_dir if cfg.cache_dir is not None else Path(cfg.save_path) / "prefix_cache"
    prefix = prefix_cache.frozen_prefix(
        model, ds.image_paths, lambda: ds.images, root, dtype, device, cfg.batch_size, lambda: autocast(device, cfg),
        on_compute=lambda n: log(f"computing the frozen prefix of {n} images ({ds.annotations_file.name}) once"))
    images.prefix = prefix_cache.hold_on_device(prefix, device, log=log) if cfg.prefix_on_gpu else prefix


# ---- precision and device ---------------------------------------------------------------
def precision_used(device: torch.device, cfg: TrainConfig) -> str:
    """``bf16`` when asked for (``precision: bf16``, or ``auto``) on CUDA; ``fp32`` otherwise (published)."""
    return "bf16" if device.type == "cuda" and cfg.precision in ("auto", "bf16") else "fp32"


def autocast(device: torch.device, cfg: TrainConfig) -> torch.autocast:
    """bf16 autocast when :func:`precision_used` is bf16; plain fp32 otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision_used(device, cfg) == "bf16")


def cache_dtype(device: torch.device, cfg: TrainConfig) -> torch.dtype:
    if cfg.cache_dtype == "auto":
        return torch.bfloat16 if precision_used(device, cfg) == "bf16" else torch.float32
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
    """The published per-epoch schedules (stepped once after each epoch):

    - ``cosineannealinglr``: ``CosineAnnealingLR(T_max=epochs, eta_min=0)``;
    - ``cosineannealinglrwithwarmup`` with ``lr_warmup_epochs`` w > 0: ``LinearLR(start_factor=1e-6,
      end_factor=1, total_iters=w)`` then ``CosineAnnealingLR(T_max=max(1, epochs - w), eta_min=0)``
      (``SequentialLR``, milestone w); with w = 0 the plain cosine.
    """
    if cfg.lr_scheduler == "none":
        return None
    warm = cfg.lr_warmup_epochs if cfg.lr_scheduler == "cosineannealinglrwithwarmup" else 0
    if warm == 0:
        return CosineAnnealingLR(optimizer, T_max=cfg.epochs, eta_min=0)
    warmup = LinearLR(optimizer, start_factor=1e-6, end_factor=1.0, total_iters=warm)
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, cfg.epochs - warm), eta_min=0)
    return SequentialLR(optimizer, schedulers=[warmup, cosine], milestones=[warm])


# ---- one epoch --------------------------------------------------------------------------
def train_one_epoch(model: CLIPHBA, train: Images, targets: torch.Tensor, order: torch.Tensor, strategy: Any,
                    optimizer: torch.optim.Optimizer, epoch: int, cfg: TrainConfig, device: torch.device,
                    progress: Callable[[int], None]) -> float:
    """One pass over the training rows in ``order``; returns the mean loss per image (each batch's
    mean loss weighted by its size, as published)."""
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
        losses.append(loss.detach() * len(idx))
        progress(len(idx))
    return float(torch.stack(losses).sum()) / len(order)


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
    with autocast(device, cfg):
        text = model.text_features()  # the adapters are fixed here: once, not per batch
    for start in range(0, len(rows), cfg.batch_size):
        idx = rows[start:start + cfg.batch_size]
        with autocast(device, cfg):
            out.append(model.forward_from_prefix(images.inputs(model, idx, device), text).float().cpu())
    return torch.cat(out) if out else torch.empty(0, 66)


@dataclass
class RSAImages:
    """The behavioural-RSA images and their two references: the triplet RDM and the RDM of their
    own SPoSE targets (``model_rdm_distance_metric`` of the targets: 1 - Pearson by default)."""

    images: Images
    triplet_rdm: np.ndarray
    target_rdm: np.ndarray


def evaluate(model: CLIPHBA, train: Images, val_idx: list[int], rsa: RSAImages | None,
             cfg: TrainConfig, device: torch.device) -> dict[str, float]:
    """Validation loss and (if enabled) behavioural RSA against both references."""
    preds = predict(model, train, cfg, device, val_idx)
    val_loss = float(nn.functional.mse_loss(preds, train.dataset.targets[val_idx]))
    scores = {"val_loss": val_loss}
    nan = (float("nan"), float("nan"))
    rsa_preds = predict(model, rsa.images, cfg, device).numpy() if rsa is not None else None
    finite = bool(torch.isfinite(preds).all()) and (rsa_preds is None or bool(np.isfinite(rsa_preds).all()))
    for name, ref in (("behavioral", rsa and rsa.triplet_rdm), ("target", rsa and rsa.target_rdm)):
        # RSA of non-finite predictions is undefined: NaN here, and the epoch is reported as diverged
        rho, p = nan if rsa is None or not finite else behavioral_rsa(rsa_preds, ref, cfg.model_rdm_distance_metric,
                                                                      cfg.rsa_similarity_metric)
        scores.update({f"{name}_rsa_rho": float(rho), f"{name}_rsa_p": float(p)})
    scores["finite_predictions"] = finite
    return scores


def divergence(epoch: int, train_loss: float | None, scores: dict, cfg: TrainConfig) -> str:
    """Why this epoch diverged ('' if it did not): a non-finite loss or prediction."""
    what = [f"{name}={value}" for name, value in (("train_loss", train_loss), ("val_loss", scores["val_loss"]))
            if value is not None and not math.isfinite(value)]
    if not scores.get("finite_predictions", True):
        what.append("non-finite predictions")
    if not what:
        return ""
    return (f"diverged at epoch {epoch} ({', '.join(what)}). Fix: lower lr (now {cfg.lr:g}) or dora_alpha, "
            "or warm up (lr_scheduler: cosine_warmup)")


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


def make_logger(cfg: TrainConfig) -> Callable[[str], None]:
    def log(message: str) -> None:
        if cfg.progress:
            print(f"[{run_name(cfg)}] {message}", file=sys.stderr, flush=True)
    return log


def progress_bar(cfg: TrainConfig, total: int, epoch: int):
    """A tqdm bar on a terminal, else a no-op counter."""
    if cfg.progress and sys.stderr.isatty():
        return tqdm(total=total, desc=f"epoch {epoch}", unit="img", leave=False)
    return None


def epoch_summary(row: dict) -> str:
    train = "" if row["train_loss"] is None else f"train {row['train_loss']:.4g}  "
    rsa = "" if math.isnan(row["behavioral_rsa_rho"]) else f"  rsa {row['behavioral_rsa_rho']:.3f}"
    flag = "  [perturbed]" if row["perturbation_active"] else ""
    return f"epoch {row['epoch']:>3}  {train}val {row['val_loss']:.4g}{rsa}  ({row['epoch_seconds']:.1f}s){flag}"


def build_model_and_data(cfg: TrainConfig, device: torch.device, log: Callable[[str], None]
                         ) -> tuple[CLIPHBA, Images, RSAImages | None]:
    """The model, the training images and (if enabled) the RSA images with their reference RDM,
    with the frozen prefix attached where caching is exact."""
    model = CLIPHBA(backbone=cfg.backbone, pretrained=cfg.pretrained, vision_layers=cfg.vision_layers,
                    transformer_layers=cfg.transformer_layers, rank=cfg.rank, dora_alpha=cfg.alpha,
                    dora_dropout=cfg.dora_dropout, adapter=cfg.adapter).to(device)
    train = Images(load_images(cfg, cfg.img_annotations_file, cfg.img_dir, model.image_size))
    rsa = None
    if cfg.behavioral_rsa:
        rsa_images = Images(load_images(cfg, cfg.rsa_annotations_file, cfg.rsa_img_dir, model.image_size))
        rsa = RSAImages(rsa_images, load_rdm(cfg.behavioral_rdm_file, n=len(rsa_images.dataset)),
                        compute_model_rdm(rsa_images.dataset.targets.numpy(), cfg.model_rdm_distance_metric))
    model.cache_text = cfg.cache_frozen_prefix  # the 66 prompts' frozen text blocks: once, truncated
    model.readout_only = cfg.cache_frozen_prefix  # last adapted blocks at the readout positions only
    model.cache_attention = cfg.cache_frozen_prefix  # first adapted blocks' attention: with the prefix
    use_cache, why = caching_allowed(cfg, model)
    if not use_cache:
        log(f"frozen-prefix cache off: {why}")
        return model, train, rsa
    for images in [train] + ([rsa.images] if rsa else []):
        attach_prefix(images, model, cfg, device, cache_dtype(device, cfg), log)
    return model, train, rsa


# ---- the run ----------------------------------------------------------------------------
def run_status(cfg: TrainConfig, last_epoch: int, stopped_early: bool, diverged: str = "") -> dict[str, Any]:
    """How the run ended: ``status`` finished | early_stopped | diverged | window_incomplete (a perturbed
    run that stopped before the last epoch of its window), ``stop_reason`` max_epochs | early_stopping |
    non_finite, ``last_epoch``, ``window_completed`` (None for an unperturbed run) and, for a diverged
    run, ``message`` ("diverged at epoch e (...). Fix: ...")."""
    perturbed = cfg.perturb_type != "none"
    window_completed = last_epoch >= cfg.perturb_epoch + cfg.perturb_length - 1 if perturbed else None
    if diverged:
        return {"status": "diverged", "stop_reason": "non_finite", "last_epoch": last_epoch,
                "window_completed": window_completed, "message": diverged}
    status = ("window_incomplete" if perturbed and not window_completed else
              "early_stopped" if stopped_early else "finished")
    return {"status": status, "stop_reason": "early_stopping" if stopped_early else "max_epochs",
            "last_epoch": last_epoch, "window_completed": window_completed}


def resumed_divergence(history: list[dict]) -> str:
    """A run whose last recorded epoch diverged stays stopped (nothing trains on from a non-finite state)."""
    last = history[-1] if history else {}
    return str(last.get("diverged_message") or f"diverged at epoch {last['epoch']}") if last.get("diverged") else ""


def run_training_experiment(config: TrainConfig, report: Report | None = None) -> dict:
    """Train one run with the study's semantics; return a summary of the last epoch and the run status.

    Writes ``save_path/<run name>/`` (config.yaml, split.json, metrics.csv, checkpoints/, run_status.json)
    and calls ``report(metrics, checkpoint_dir)`` after the initial evaluation and every epoch.
    """
    cfg = config
    out = run_dir(cfg)
    log = make_logger(cfg)
    device = resolve_device(cfg.device, fallback=cfg.cpu_fallback, log=log)
    precision = precision_used(device, cfg)
    # set both ways: a Ray worker process may run a bf16 trial and then an fp32 one
    torch.backends.cuda.matmul.allow_tf32 = precision == "bf16"
    if precision == "bf16":
        torch.backends.cudnn.allow_tf32 = True
    elif cfg.precision == "bf16":
        log("precision: bf16 applies on CUDA only; this run computes in fp32")
    if cfg.wandb_project:
        log(f"W&B project {cfg.wandb_project!r} (entity {cfg.wandb_entity!r}) recorded in config.yaml for a "
            "sweep's W&B logger; `train` itself writes metrics.csv only")

    start = start_source(cfg, out)
    seed_everything(cfg.random_seed)
    model, train, rsa = build_model_and_data(cfg, device, log)
    optimizer = make_optimizer(cfg, model.adapter_parameters())
    scheduler = make_scheduler(cfg, optimizer)
    state, history = start_state(start, cfg, model, optimizer, scheduler, train.dataset, log)
    shuffle = torch.Generator().manual_seed(cfg.random_seed)
    shuffle.set_state(state.shuffle_generator)
    targets = train.dataset.targets
    train_idx, val_idx = state.train_indices, state.val_indices
    mean, std = target_stats(targets)  # scalar mean/std of ALL target values of the annotation file (published)
    strategy = choose_perturbation_strategy(cfg.perturb_type, cfg.perturb_epoch, cfg.perturb_length, cfg.perturb_seed,
                                            target_mean=mean, target_std=std, perturb_fraction=cfg.perturb_fraction)
    prepare_run_dir(cfg, out, train.dataset, state)
    if history:  # a fork shows its inherited rows even if it stops before training an epoch
        write_metrics(out / "metrics.csv", history)
    train_rows = torch.as_tensor(train_idx)
    run_meta: dict[str, Any] = {"precision_used": precision, "start": start.kind,
                                "start_from": None if start.path is None else str(start.path)}

    def finish_epoch(epoch: int, metrics: dict, status: dict | None = None) -> None:
        state.epoch = epoch
        state.optimizer = optimizer.state_dict()
        state.scheduler = scheduler.state_dict() if scheduler else None
        state.shuffle_generator = shuffle.get_state()
        state.rng = ckpt.capture_rng()
        history.append(metrics)
        meta = {"run_name": run_name(cfg), "adapter": model.adapter, "config": cfg.to_dict(), "metrics": history,
                **run_meta, "run_status": status or {"status": "running"}}
        ckpt_dir = ckpt.save_checkpoint(out, model.adapter_state_dict(), state, meta)
        write_metrics(out / "metrics.csv", history)
        log(epoch_summary(metrics))
        if report is not None:
            report({**metrics, **{k: v for k, v in (status or {}).items() if v is not None}}, str(ckpt_dir))

    diverged = resumed_divergence(history)
    if state.epoch == -2:  # a fresh run: the initial evaluation is epoch -1
        started = time.perf_counter()
        scores = evaluate(model, train, val_idx, rsa, cfg, device)
        state.best_val_loss = scores["val_loss"]
        diverged = divergence(-1, None, scores, cfg)
        finish_epoch(-1, metrics_row(-1, None, scores, False, optimizer, time.perf_counter() - started, 0,
                                     diverged=diverged), run_status(cfg, -1, False, diverged) if diverged else None)
    elif start.kind.startswith("forked") and cfg.fork_early_stopping == "reset":
        scores = evaluate(model, train, val_idx, rsa, cfg, device)  # published: a fork re-evaluates its start
        state.best_val_loss, state.epochs_without_improvement = scores["val_loss"], 0
        run_meta["fork_start_val_loss"] = scores["val_loss"]
        log(f"early stopping restarts at the fork: best val_loss {scores['val_loss']:.4g}, counter 0")

    patience = cfg.early_stopping_patience or 0
    stopped = bool(patience) and state.epochs_without_improvement >= patience
    for epoch in range(state.epoch + 1, cfg.epochs):
        if stopped or diverged:
            break
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        order = train_rows[epoch_order(len(train_rows), shuffle)]
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
        stopped = bool(patience) and state.epochs_without_improvement >= patience
        diverged = divergence(epoch, train_loss, scores, cfg)  # NaN never counts as "no improvement"
        last = stopped or bool(diverged) or epoch == cfg.epochs - 1
        seconds = time.perf_counter() - started
        finish_epoch(epoch, metrics_row(epoch, train_loss, scores, strategy.is_active_epoch(epoch), optimizer,
                                        seconds, len(order), lr=lr, diverged=diverged),
                     run_status(cfg, epoch, stopped, diverged) if last else None)
        if stopped and not diverged:
            log(f"early stopping: no val_loss improvement for {patience} epochs")
    status = run_status(cfg, int(history[-1]["epoch"]), stopped, diverged)
    if diverged:
        log(diverged)
    atomic_write_text(out / STATUS_FILE, json.dumps({**status, "precision_used": precision}))
    if status["status"] == "window_incomplete":
        log(f"perturbation window (epochs {cfg.perturb_epoch}..{cfg.perturb_epoch + cfg.perturb_length - 1}) "
            f"not completed: the run stopped after epoch {status['last_epoch']}")
    return {"run_dir": str(out), **history[-1], **status, "precision_used": precision}


def metrics_row(epoch: int, train_loss: float | None, scores: dict, active: bool, optimizer: torch.optim.Optimizer,
                seconds: float, n_images: int, lr: float | None = None, diverged: str = "") -> dict:
    """One epoch's row (metrics.csv, meta.json, the Tune report); ``diverged`` marks a non-finite loss
    or prediction (``diverged_message`` says which), after which the run stops."""
    scores = {k: v for k, v in scores.items() if k != "finite_predictions"}
    row = {"epoch": epoch, "train_loss": train_loss, **scores, "perturbation_active": bool(active),
           "lr": optimizer.param_groups[0]["lr"] if lr is None else lr, "epoch_seconds": seconds,
           "images_per_second": n_images / seconds if seconds > 0 else 0.0, "inherited": False,
           "diverged": bool(diverged)}
    return {**row, "diverged_message": diverged} if diverged else row


def prepare_run_dir(cfg: TrainConfig, out: Path, dataset: ThingsDataset, state: ckpt.TrainingState) -> None:
    """config.yaml and split.json (the split by image name, reused by every fork; never overwritten)."""
    ensure_inside(out / "checkpoints", cfg.save_path, "save_path")  # no symlinked run folder: writes stay inside
    make_dirs(out)
    save_config(cfg, out / "config.yaml")
    record = SplitRecord(state.train_names, state.val_names, state.target_digests)
    write_split_json(out / "split.json", record, dataset.annotations_file, state.train_indices, state.val_indices)
