"""One CLIP-HBA training run: ``run_training_experiment(config, report=None)``.

The story, top to bottom: seed, load data and split, build the model, set up (or restore, see
hba_sweep.training.run_start) optimizer, scheduler and RNG state, evaluate once (epoch -1; a fork re-evaluates its start),
then per epoch train with the perturbation strategy, evaluate, checkpoint, write the metrics
row and report it; stop early after ``early_stopping_patience`` epochs without improvement.
The run's moving parts (model, optimizer, scheduler, shuffle generator, state, metrics rows) are
one :class:`Run`; it starts as a :class:`~hba_sweep.training.run_start.StartKind` and ends as a
:class:`~hba_sweep.training.run_record.RunEnd` (hba_sweep.training.run_record: ``finished``,
``early_stopped``, ``diverged`` (a non-finite loss or prediction: that epoch is recorded and the run
stops, without an error, so a sweep does not retry it) or, for a perturbed run stopped before its
window ended, ``window_incomplete``).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from hba_sweep.config import TrainConfig, run_dir
from hba_sweep.foundation.devices import autocast, precision_used, resolve_device
from hba_sweep.model import CLIPHBA
from hba_sweep.rsa import behavioral_rsa
from hba_sweep.training.predict import predict_batches, to_device
from hba_sweep.training.run import Report, Run, open_run
from hba_sweep.training.run_inputs import Images, RSAImages, build_model_and_data, run_strategy
from hba_sweep.training.run_record import (
    STATUS_FILE,
    RunEnd,
    make_logger,
    metrics_row,
    prepare_run_dir,
    progress_bar,
    resumed_divergence,
    run_status,
    write_metrics,
    write_run_status,
)
from hba_sweep.training.run_start import StartKind, start_source
from hba_sweep.training.split import epoch_order

__all__ = ["STATUS_FILE", "run_training_experiment"]


# ---- one epoch --------------------------------------------------------------------------
def train_one_epoch(
    model: CLIPHBA,
    train: Images,
    targets: torch.Tensor,
    order: torch.Tensor,
    strategy: Any,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    cfg: TrainConfig,
    device: torch.device,
    progress: Callable[[int], None],
) -> float:
    """One pass over the training rows in ``order``; returns the mean loss per image (each batch's
    mean loss weighted by its size, as published)."""
    model.train()
    active = strategy.is_active_epoch(epoch)
    losses = []
    for batch_idx, start in enumerate(range(0, len(order), cfg.batch_size)):
        idx = order[start : start + cfg.batch_size]
        batch_targets = to_device(targets[idx], device)
        with autocast(device, cfg.precision):
            if active:
                tokens, batch_targets = perturbed_inputs(
                    model, train, idx, batch_targets, strategy, epoch, batch_idx, device
                )
            else:
                tokens = train.inputs(model, idx, device)
            loss = nn.functional.mse_loss(model.forward_from_prefix(tokens).float(), batch_targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach() * len(idx))
        progress(len(idx))
    return float(torch.stack(losses).sum()) / len(order)


def perturbed_inputs(
    model: CLIPHBA,
    train: Images,
    idx: torch.Tensor,
    targets: torch.Tensor,
    strategy: Any,
    epoch: int,
    batch_idx: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
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


def predict(
    model: CLIPHBA, images: Images, cfg: TrainConfig, device: torch.device, indices: list[int] | None = None
) -> torch.Tensor:
    """66-d predictions for ``indices`` (all images by default), in eval mode, on CPU (the one loop:
    hba_sweep.training.predict)."""
    rows = torch.arange(len(images.dataset)) if indices is None else torch.as_tensor(indices)
    return predict_batches(
        model, lambda idx: images.inputs(model, idx, device), rows, cfg.batch_size, device, cfg.precision
    )


def evaluate(
    model: CLIPHBA, train: Images, val_idx: list[int], rsa: RSAImages | None, cfg: TrainConfig, device: torch.device
) -> dict[str, float]:
    """Validation loss and (if enabled) behavioural RSA against both references."""
    preds = predict(model, train, cfg, device, val_idx)
    val_loss = float(nn.functional.mse_loss(preds, train.dataset.targets[val_idx]))
    scores = {"val_loss": val_loss}
    nan = (float("nan"), float("nan"))
    rsa_preds = predict(model, rsa.images, cfg, device).numpy() if rsa is not None else None
    finite = bool(torch.isfinite(preds).all()) and (rsa_preds is None or bool(np.isfinite(rsa_preds).all()))
    for name, ref in (("behavioral", rsa and rsa.triplet_rdm), ("target", rsa and rsa.target_rdm)):
        # RSA of non-finite predictions is undefined: NaN here, and the epoch is reported as diverged
        rho, p = (
            nan
            if rsa is None or not finite
            else behavioral_rsa(rsa_preds, ref, cfg.model_rdm_distance_metric, cfg.rsa_similarity_metric)
        )
        scores.update({f"{name}_rsa_rho": float(rho), f"{name}_rsa_p": float(p)})
    scores["finite_predictions"] = finite
    return scores


def divergence(epoch: int, train_loss: float | None, scores: dict, cfg: TrainConfig) -> str:
    """Why this epoch diverged ('' if it did not): a non-finite loss or prediction."""
    what = [
        f"{name}={value}"
        for name, value in (("train_loss", train_loss), ("val_loss", scores["val_loss"]))
        if value is not None and not math.isfinite(value)
    ]
    if not scores.get("finite_predictions", True):
        what.append("non-finite predictions")
    if not what:
        return ""
    return (
        f"diverged at epoch {epoch} ({', '.join(what)}). Fix: lower lr (now {cfg.lr:g}) or dora_alpha, "
        "or warm up (lr_scheduler: cosine_warmup)"
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---- the run ----------------------------------------------------------------------------
def set_precision(device: torch.device, cfg: TrainConfig, log: Callable[[str], None]) -> str:
    """The run's precision (:func:`precision_used`) and TF32 matmuls with it."""
    precision = precision_used(device, cfg.precision)
    # set both ways: a Ray worker process may run a bf16 trial and then an fp32 one
    torch.backends.cuda.matmul.allow_tf32 = precision == "bf16"
    if precision == "bf16":
        torch.backends.cudnn.allow_tf32 = True
    elif cfg.precision == "bf16":
        log("precision: bf16 applies on CUDA only; this run computes in fp32")
    return precision


def train_epoch(run: Run, train: Images, order: torch.Tensor, strategy: Any, epoch: int, device: torch.device) -> float:
    """Train one epoch over the rows in ``order`` (with a progress bar on a terminal), then step the schedule."""
    bar = progress_bar(run.cfg, len(order), epoch)
    train_loss = train_one_epoch(
        run.model,
        train,
        train.dataset.targets,
        order,
        strategy,
        run.optimizer,
        epoch,
        run.cfg,
        device,
        bar.update if bar else lambda n: None,
    )
    if bar:
        bar.close()
    if run.scheduler:
        run.scheduler.step()
    return train_loss


def run_training_experiment(config: TrainConfig, report: Report | None = None) -> dict:
    """Train one run with the study's semantics; return a summary of the last epoch and the run status.

    Writes ``save_path/<run name>/`` (config.yaml, split.json, metrics.csv, checkpoints/, run_status.json)
    and calls ``report(metrics, checkpoint_dir)`` after the initial evaluation and every epoch.
    """
    cfg = config
    out = run_dir(cfg)
    log = make_logger(cfg)
    device = resolve_device(cfg.device, fallback=cfg.cpu_fallback, log=log)
    precision = set_precision(device, cfg, log)
    if cfg.wandb_project:
        log(
            f"W&B project {cfg.wandb_project!r} (entity {cfg.wandb_entity!r}) recorded in config.yaml for a "
            "sweep's W&B logger; `train` itself writes metrics.csv only"
        )

    start = start_source(cfg, out)
    seed_everything(cfg.random_seed)
    model, train, rsa = build_model_and_data(cfg, device, log)
    run = open_run(cfg, out, start, model, train.dataset, precision, log, report)
    strategy = run_strategy(cfg, train.dataset.targets)
    prepare_run_dir(cfg, out, train.dataset, run.state)
    if run.history:  # a fork shows its inherited rows even if it stops before training an epoch
        write_metrics(out / "metrics.csv", run.history)
    evaluation = partial(evaluate, model, train, run.state.val_indices, rsa, cfg, device)

    diverged = resumed_divergence(run.history)
    if start.kind is StartKind.FRESH:  # the initial evaluation is epoch -1
        started = time.perf_counter()
        scores = evaluation()
        run.state.best_val_loss = scores["val_loss"]
        diverged = divergence(-1, None, scores, cfg)
        run.save_epoch(
            -1,
            metrics_row(-1, None, scores, False, run.optimizer, time.perf_counter() - started, 0, diverged=diverged),
            run_status(cfg, -1, False, diverged) if diverged else None,
        )
    elif start.kind.is_fork and cfg.fork_early_stopping == "reset":
        scores = evaluation()  # published: a fork re-evaluates its start
        run.state.best_val_loss, run.state.epochs_without_improvement = scores["val_loss"], 0
        run.meta["fork_start_val_loss"] = scores["val_loss"]
        log(f"early stopping restarts at the fork: best val_loss {scores['val_loss']:.4g}, counter 0")

    stopped = run.patience_exhausted
    train_rows = torch.as_tensor(run.state.train_indices)
    for epoch in range(run.state.epoch + 1, cfg.epochs):
        if stopped or diverged:
            break
        started = time.perf_counter()
        lr = run.optimizer.param_groups[0]["lr"]
        order = train_rows[epoch_order(len(train_rows), run.shuffle)]
        train_loss = train_epoch(run, train, order, strategy, epoch, device)
        scores = evaluation()
        run.track_improvement(scores["val_loss"])
        stopped = run.patience_exhausted
        diverged = divergence(epoch, train_loss, scores, cfg)  # NaN never counts as "no improvement"
        last = stopped or bool(diverged) or epoch == cfg.epochs - 1
        row = metrics_row(
            epoch,
            train_loss,
            scores,
            strategy.is_active_epoch(epoch),
            run.optimizer,
            time.perf_counter() - started,
            len(order),
            lr=lr,
            diverged=diverged,
        )
        run.save_epoch(epoch, row, run_status(cfg, epoch, stopped, diverged) if last else None)
        if stopped and not diverged:
            log(f"early stopping: no val_loss improvement for {cfg.early_stopping_patience} epochs")
    return finish(run, stopped, diverged)


def finish(run: Run, stopped: bool, diverged: str) -> dict:
    """Write run_status.json and say how the run ended; return the summary."""
    cfg, precision = run.cfg, run.meta["precision_used"]
    status = run_status(cfg, int(run.history[-1]["epoch"]), stopped, diverged)
    if diverged:
        run.log(diverged)
    write_run_status(run.out, status, precision)
    if status["status"] == RunEnd.WINDOW_INCOMPLETE:
        run.log(
            f"perturbation window (epochs {cfg.perturb_epoch}..{cfg.perturb_epoch + cfg.perturb_length - 1}) "
            f"not completed: the run stopped after epoch {status['last_epoch']}"
        )
    return {"run_dir": str(run.out), **run.history[-1], **status, "precision_used": precision}
