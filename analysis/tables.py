"""The tidy tables: ``results.parquet`` (one row per trial, epoch, dataset, reference, metric) and
``training_metrics.parquet`` (the metrics each trial logged per epoch), with trial settings."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from analysis.evaluate import checkpoint_key
from analysis.gather import Study, Trial

RESULT_COLUMNS = ["trial_id", "epoch", "inherited", "dataset", "reference", "metric", "value", "p_value",
                  "ci_low", "ci_high"]
TRIAL_COLUMNS = ["perturb_type", "perturb_epoch", "perturb_length", "perturb_seed", "perturb_fraction",
                 "random_seed", "baseline_id", "backbone", "rank", "vision_layers", "transformer_layers", "lr",
                 "epochs"]
TRAINING_COLUMNS = ["epoch", "train_loss", "val_loss", "behavioral_rsa_rho", "behavioral_rsa_p",
                    "perturbation_active", "epoch_seconds", "inherited"]


def trial_settings(trial: Trial) -> dict[str, Any]:
    values = {k: trial.config.get(k) for k in TRIAL_COLUMNS if k != "baseline_id"}
    values["baseline_id"] = trial.baseline_id
    return values


def results_table(study: Study, evaluations: pd.DataFrame, eval_keys: Sequence[str]) -> pd.DataFrame:
    """Join each (trial, epoch) with its checkpoint's evaluation rows under the current settings."""
    evals = evaluations[evaluations["eval_key"].isin(list(eval_keys))]
    index = pd.DataFrame([{"trial_id": e.trial_id, "epoch": e.epoch, "inherited": e.inherited,
                           "checkpoint_key": checkpoint_key(e.checkpoint)} for e in study.entries],
                         columns=["trial_id", "epoch", "inherited", "checkpoint_key"])
    frame = index.merge(evals, on="checkpoint_key", how="inner")
    settings = pd.DataFrame([{"trial_id": t.trial_id, **trial_settings(t)} for t in study.trials.values()],
                            columns=["trial_id", *TRIAL_COLUMNS])
    frame = frame.merge(settings, on="trial_id", how="left")
    frame = frame[RESULT_COLUMNS + TRIAL_COLUMNS + ["checkpoint_key", "eval_key"]]
    frame = frame.sort_values(["trial_id", "epoch", "dataset", "reference", "metric"]).reset_index(drop=True)
    return _typed(frame)


def training_table(study: Study) -> pd.DataFrame:
    """One row per (trial, epoch) of the logged training history."""
    rows = []
    for trial in study.trials.values():
        for row in trial.history:
            rows.append({"trial_id": trial.trial_id, **{k: row.get(k) for k in TRAINING_COLUMNS},
                         **{k: v for k, v in trial_settings(trial).items() if k != "lr"}})
    columns = ["trial_id", *TRAINING_COLUMNS, *[c for c in TRIAL_COLUMNS if c != "lr"]]
    frame = pd.DataFrame(rows, columns=columns)
    frame = frame.drop_duplicates(["trial_id", "epoch"], keep="last").sort_values(["trial_id", "epoch"])
    return _typed(frame.reset_index(drop=True))


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Stable dtypes (parquet-friendly): floats for numbers that may be missing, bools, ints."""
    for col in ("value", "p_value", "ci_low", "ci_high", "train_loss", "val_loss", "behavioral_rsa_rho",
                "behavioral_rsa_p", "epoch_seconds", "lr", "perturb_fraction"):
        if col in frame:
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(np.float64)
    for col in ("inherited", "perturbation_active"):
        if col in frame:
            frame[col] = frame[col].fillna(False).astype(bool)
    for col in ("epoch", "perturb_epoch", "perturb_length", "perturb_seed", "random_seed", "rank", "vision_layers",
                "transformer_layers", "epochs"):
        if col in frame:
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("Int64")
    return frame
