"""The moving parts of one training run (:class:`Run`): the model, its optimizer (:func:`make_optimizer`),
LR schedule (:func:`make_scheduler`) and shuffle generator, the training state and the metrics rows so
far; :meth:`Run.save_epoch` checkpoints an epoch, writes metrics.csv and reports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

from hba_sweep import __version__
from hba_sweep.artifacts import checkpoint as ckpt
from hba_sweep.artifacts import identity
from hba_sweep.config import TrainConfig, run_name
from hba_sweep.data.things import ThingsDataset
from hba_sweep.model import CLIPHBA
from hba_sweep.training.run_record import epoch_summary, write_metrics
from hba_sweep.training.run_start import Start, start_state

Report = Callable[[dict, str], None]


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


@dataclass
class Run:
    """The moving parts of one run: the model, its optimizer, scheduler and shuffle generator, the training
    state (split, early-stopping counters, last finished epoch) and the metrics rows so far; and where an
    epoch goes (the run directory, the log, ``report``)."""

    cfg: TrainConfig
    out: Path
    model: CLIPHBA
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    shuffle: torch.Generator
    state: ckpt.TrainingState
    history: list[dict]
    meta: dict[str, Any]  # meta.json's run entries: precision_used, start, start_from (fork_start_val_loss)
    log: Callable[[str], None]
    report: Report | None = None

    @property
    def patience_exhausted(self) -> bool:
        patience = self.cfg.early_stopping_patience or 0
        return bool(patience) and self.state.epochs_without_improvement >= patience

    def track_improvement(self, val_loss: float) -> None:
        """Early stopping's counter after an evaluation: reset on a new best validation loss."""
        if val_loss < self.state.best_val_loss:
            self.state.best_val_loss, self.state.epochs_without_improvement = val_loss, 0
        else:
            self.state.epochs_without_improvement += 1

    def save_epoch(self, epoch: int, metrics: dict, status: dict | None = None) -> None:
        """Checkpoint epoch ``epoch`` (adapters, full state, meta.json), rewrite metrics.csv, log the
        epoch and report it; ``status`` (:func:`run_status`) on the run's last epoch."""
        state = self.state
        state.epoch = epoch
        state.optimizer = self.optimizer.state_dict()
        state.scheduler = self.scheduler.state_dict() if self.scheduler else None
        state.shuffle_generator = self.shuffle.get_state()
        state.rng = ckpt.capture_rng()
        self.history.append(metrics)
        meta = {
            "run_name": run_name(self.cfg),
            "adapter": self.model.adapter,
            "config": self.cfg.to_dict(),
            "metrics": self.history,
            **self.meta,
            "run_status": status or {"status": "running"},
        }
        ckpt_dir = ckpt.save_checkpoint(self.out, self.model.adapter_state_dict(), state, meta)
        write_metrics(self.out / "metrics.csv", self.history)
        self.log(epoch_summary(metrics))
        if self.report is not None:
            self.report({**metrics, **{k: v for k, v in (status or {}).items() if v is not None}}, str(ckpt_dir))


def open_run(
    cfg: TrainConfig,
    out: Path,
    start: Start,
    model: CLIPHBA,
    dataset: ThingsDataset,
    precision: str,
    log: Callable[[str], None],
    report: Report | None,
) -> Run:
    """Optimizer, scheduler, training state and shuffle generator: new, or restored from the start's source."""
    optimizer = make_optimizer(cfg, model.adapter_parameters())
    scheduler = make_scheduler(cfg, optimizer)
    inputs = identity.input_digests(cfg.to_dict())
    state, history = start_state(start, cfg, model, optimizer, scheduler, dataset, log, inputs)
    shuffle = torch.Generator().manual_seed(cfg.random_seed)
    shuffle.set_state(state.shuffle_generator)
    meta = {
        "precision_used": precision,
        "start": start.kind.value,
        "start_from": None if start.path is None else str(start.path),
        "inputs": inputs,
        "version": __version__,
    }
    return Run(cfg, out, model, optimizer, scheduler, shuffle, state, history, meta, log, report)
