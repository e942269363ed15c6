"""A stand-in for ``run_training_experiment`` that sleeps instead of training (tests, benchmarks).

It keeps the contract the sweep relies on: epochs from -1 (or after the resumed / forked
checkpoint's epoch) to ``epochs - 1``, a checkpoint directory per epoch with ``meta.json``
(epoch, run name, config, the metrics rows so far: inherited rows for a fork), ``metrics.csv``,
and ``report(metrics, checkpoint_dir)``. The numbers are a deterministic function of the seed,
the perturbation and the epoch, so a fork's inherited rows equal its baseline's.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from ray import tune

from hba_sweep.config import run_dir

SECONDS_ENV = "HBA_SLEEP_EPOCH_SECONDS"


def _loss(cfg, epoch: int) -> float:
    active = cfg.perturb_type != "none" and cfg.perturb_epoch <= epoch < cfg.perturb_epoch + cfg.perturb_length
    return round(1.0 / (epoch + 2) + 0.01 * cfg.random_seed + (0.5 if active else 0.0), 6)


def _stop_after(stop_after: dict[str, int] | None) -> int | None:
    """The epoch after which this trial returns early (as early stopping would): ``stop_after`` maps
    a part of trial names to that epoch."""
    if not stop_after:
        return None
    name = tune.get_context().get_trial_name()
    return next((epoch for part, epoch in stop_after.items() if part in name), None)


def sleep_training(
    config, report: Callable | None = None, seconds: float | None = None, stop_after: dict[str, int] | None = None
) -> dict:
    """Sleep ``seconds`` (default $HBA_SLEEP_EPOCH_SECONDS or 0.05) per epoch; write tiny checkpoints."""
    seconds = float(os.environ.get(SECONDS_ENV, 0.05)) if seconds is None else seconds
    out = run_dir(config)
    history, start = [], -1
    source = config.resume_from or config.init_from
    if source:
        meta = json.loads((Path(source) / "meta.json").read_text())
        history = [dict(r, inherited=r.get("inherited", False) or not config.resume_from) for r in meta["metrics"]]
        start = int(meta["epoch"]) + 1
    stop = _stop_after(stop_after)
    for epoch in range(start, config.epochs):
        time.sleep(seconds)
        row = {
            "epoch": epoch,
            "train_loss": None if epoch < 0 else _loss(config, epoch),
            "val_loss": _loss(config, epoch),
            "behavioral_rsa_rho": -_loss(config, epoch),
            "perturbation_active": False,
            "inherited": False,
            "pid": os.getpid(),
            "ended": time.time(),
        }
        history.append(row)
        ckpt = out / "checkpoints" / f"epoch_{epoch}"
        ckpt.mkdir(parents=True, exist_ok=True)
        (ckpt / "meta.json").write_text(
            json.dumps({"epoch": epoch, "run_name": "run", "config": config.to_dict(), "metrics": history})
        )
        (out / "metrics.csv").write_text("epoch\n" + "".join(f"{r['epoch']}\n" for r in history))
        if report is not None:
            report(dict(row), str(ckpt))
        if stop is not None and epoch >= stop:
            break
    return {"run_dir": str(out), **history[-1]}
