"""What a training run records besides its checkpoints: the metrics rows (``metrics.csv``), how the run
ended (:class:`RunEnd`, :class:`StopReason`, ``run_status.json``), the run directory's config.yaml and
split.json, and its progress lines.

The enums are ``StrEnum``: their values are the strings written to run_status.json, meta.json, the
metrics, done.json and Tune's reports (``run_status`` writes the plain values).
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from hba_sweep.artifacts import checkpoint as ckpt
from hba_sweep.config import TrainConfig, run_name, save_config
from hba_sweep.data.things import ThingsDataset
from hba_sweep.foundation.io_utils import atomic_write_text
from hba_sweep.foundation.safe_paths import ensure_inside, make_dirs
from hba_sweep.training.split import SplitRecord, write_split_json

METRIC_COLUMNS = [
    "epoch",
    "train_loss",
    "val_loss",
    "behavioral_rsa_rho",
    "behavioral_rsa_p",
    "target_rsa_rho",
    "target_rsa_p",
    "perturbation_active",
    "lr",
    "epoch_seconds",
    "images_per_second",
    "inherited",
    "diverged",
]
STATUS_FILE = "run_status.json"


class RunEnd(StrEnum):
    """How a run ended (``status``)."""

    FINISHED = "finished"
    EARLY_STOPPED = "early_stopped"
    DIVERGED = "diverged"  # a non-finite loss or prediction: that epoch is recorded and the run stops
    WINDOW_INCOMPLETE = "window_incomplete"  # a perturbed run stopped before its window's last epoch


class StopReason(StrEnum):
    """Why the epochs stopped (``stop_reason``)."""

    MAX_EPOCHS = "max_epochs"
    EARLY_STOPPING = "early_stopping"
    NON_FINITE = "non_finite"


def run_status(cfg: TrainConfig, last_epoch: int, stopped_early: bool, diverged: str = "") -> dict[str, Any]:
    """How the run ended: ``status`` (:class:`RunEnd`), ``stop_reason`` (:class:`StopReason`), ``last_epoch``,
    ``window_completed`` (None for an unperturbed run) and, for a diverged run, ``message`` ("diverged at
    epoch e (...). Fix: ..."). The values are plain strings, as written to disk."""
    perturbed = cfg.perturb_type != "none"
    window_completed = last_epoch >= cfg.perturb_epoch + cfg.perturb_length - 1 if perturbed else None
    if diverged:
        return {
            "status": RunEnd.DIVERGED.value,
            "stop_reason": StopReason.NON_FINITE.value,
            "last_epoch": last_epoch,
            "window_completed": window_completed,
            "message": diverged,
        }
    status = (
        RunEnd.WINDOW_INCOMPLETE
        if perturbed and not window_completed
        else RunEnd.EARLY_STOPPED
        if stopped_early
        else RunEnd.FINISHED
    )
    reason = StopReason.EARLY_STOPPING if stopped_early else StopReason.MAX_EPOCHS
    return {
        "status": status.value,
        "stop_reason": reason.value,
        "last_epoch": last_epoch,
        "window_completed": window_completed,
    }


def write_run_status(out: Path, status: dict[str, Any], precision: str) -> None:
    atomic_write_text(out / STATUS_FILE, json.dumps({**status, "precision_used": precision}))


def resumed_divergence(history: list[dict]) -> str:
    """A run whose last recorded epoch diverged stays stopped (nothing trains on from a non-finite state)."""
    last = history[-1] if history else {}
    return str(last.get("diverged_message") or f"diverged at epoch {last['epoch']}") if last.get("diverged") else ""


def metrics_row(
    epoch: int,
    train_loss: float | None,
    scores: dict,
    active: bool,
    optimizer: torch.optim.Optimizer,
    seconds: float,
    n_images: int,
    lr: float | None = None,
    diverged: str = "",
) -> dict:
    """One epoch's row (metrics.csv, meta.json, the Tune report); ``diverged`` marks a non-finite loss
    or prediction (``diverged_message`` says which), after which the run stops."""
    scores = {k: v for k, v in scores.items() if k != "finite_predictions"}
    row = {
        "epoch": epoch,
        "train_loss": train_loss,
        **scores,
        "perturbation_active": bool(active),
        "lr": optimizer.param_groups[0]["lr"] if lr is None else lr,
        "epoch_seconds": seconds,
        "images_per_second": n_images / seconds if seconds > 0 else 0.0,
        "inherited": False,
        "diverged": bool(diverged),
    }
    return {**row, "diverged_message": diverged} if diverged else row


def write_metrics(path: Path, rows: list[dict]) -> None:
    """Rewrite metrics.csv atomically from the rows (one per epoch, no duplicates)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def prepare_run_dir(cfg: TrainConfig, out: Path, dataset: ThingsDataset, state: ckpt.TrainingState) -> None:
    """config.yaml and split.json (the split by image name, reused by every fork; never overwritten)."""
    ensure_inside(out / "checkpoints", cfg.save_path, "save_path")  # no symlinked run folder: writes stay inside
    make_dirs(out)
    save_config(cfg, out / "config.yaml")
    record = SplitRecord(state.train_names, state.val_names, state.target_digests)
    write_split_json(out / "split.json", record, dataset.annotations_file, state.train_indices, state.val_indices)


# ---- progress lines ---------------------------------------------------------------------
def make_logger(cfg: TrainConfig) -> Callable[[str], None]:
    def log(message: str) -> None:
        if cfg.progress:
            print(f"[{run_name(cfg)}] {message}", file=sys.stderr, flush=True)

    return log


def progress_bar(cfg: TrainConfig, total: int, epoch: int):
    """A tqdm bar on a terminal, else None."""
    if cfg.progress and sys.stderr.isatty():
        return tqdm(total=total, desc=f"epoch {epoch}", unit="img", leave=False)
    return None


def epoch_summary(row: dict) -> str:
    train = "" if row["train_loss"] is None else f"train {row['train_loss']:.4g}  "
    rsa = "" if math.isnan(row["behavioral_rsa_rho"]) else f"  rsa {row['behavioral_rsa_rho']:.3f}"
    flag = "  [perturbed]" if row["perturbation_active"] else ""
    return f"epoch {row['epoch']:>3}  {train}val {row['val_loss']:.4g}{rsa}  ({row['epoch_seconds']:.1f}s){flag}"
