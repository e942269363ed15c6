"""The tidy tables, with the trials' settings as columns:

- ``results.parquet``: one row per (trial, epoch, dataset, reference, metric), with the value, its
  baseline's value at the same epoch (``baseline_value``) and ``delta = value - baseline_value``;
- ``training_metrics.parquet``: the metrics each trial logged per epoch;
- ``summary.parquet``: one row per perturbed trial, the published max/min deviations
  (:mod:`analysis.definitions`).

A trial is identified by Tune's trial id (``trial_id``) with its readable name (``trial_label``).
Baselines carry no perturbation settings (null). Settings that differ between trials (searched
hyperparameters such as lr or dora_alpha) are columns too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from analysis import definitions as d
from analysis.evaluate import DIMENSION_METRIC, ROW_KEY_COLUMNS, VALUE_COLUMNS, checkpoint_key
from analysis.records import Study, Trial
from hba_sweep.training.run_record import METRIC_COLUMNS

RESULT_VALUE_COLUMNS = [*VALUE_COLUMNS, "baseline_value", "delta"]
RESULT_COLUMNS = ["trial_id", "trial_label", "epoch", "inherited", *ROW_KEY_COLUMNS, *RESULT_VALUE_COLUMNS]
PERTURB_COLUMNS = ["perturb_epoch", "perturb_length", "perturb_seed", "perturb_fraction"]
TRIAL_COLUMNS = [
    "perturb_type",
    *PERTURB_COLUMNS,
    "random_seed",
    "baseline_id",
    "is_baseline",
    "backbone",
    "rank",
    "vision_layers",
    "transformer_layers",
    "lr",
    "epochs",
]
# the metrics.csv columns the table keeps (not lr, a setting column, nor throughput and divergence)
TRAINING_COLUMNS = [c for c in METRIC_COLUMNS if c not in ("lr", "images_per_second", "diverged")]
_BOOL_COLUMNS = ("inherited", "perturbation_active", "is_baseline")
_INT_COLUMNS = (
    "epoch",
    "perturb_epoch",
    "perturb_length",
    "perturb_seed",
    "random_seed",
    "rank",
    "vision_layers",
    "transformer_layers",
    "epochs",
)
# numbers that may be missing: the results' values, the training metrics that are neither ints nor bools, lr
_FLOAT_COLUMNS = (
    *RESULT_VALUE_COLUMNS,
    *(c for c in TRAINING_COLUMNS if c not in _BOOL_COLUMNS + _INT_COLUMNS),
    "lr",
    "perturb_fraction",
)
# never "searched": they differ per trial by construction or name files
NOT_SEARCHED = {
    "run_name",
    "init_from",
    "init_epoch",
    "resume_from",
    "save_path",
    "cache_dir",
    "progress",
    "device",
    "img_dir",
    "img_annotations_file",
    "rsa_annotations_file",
    "rsa_img_dir",
    "behavioral_rdm_file",
    "checkpoint_path",
    "baseline_checkpoint_path",
    "split_file",
}


def searched_keys(study: Study) -> list[str]:
    """Config keys whose value differs between trials (the study's swept or searched settings)."""
    keys: dict[str, set] = {}
    for t in study.trials.values():
        for k, v in t.config.items():
            if k not in NOT_SEARCHED and isinstance(v, (int, float, str, bool, type(None))):
                keys.setdefault(k, set()).add(v)
    return sorted(k for k, vals in keys.items() if len(vals) > 1)


def trial_settings(trial: Trial, extra: Sequence[str] = ()) -> dict[str, Any]:
    """The trial's settings; a baseline has perturb_type none and null perturbation settings."""
    values = {k: trial.config.get(k) for k in (*TRIAL_COLUMNS, *extra) if k not in ("baseline_id", "is_baseline")}
    values.update(trial_label=trial.label, baseline_id=trial.baseline_id, is_baseline=trial.is_baseline)
    if trial.is_baseline:
        values.update({"perturb_type": "none", **{k: None for k in PERTURB_COLUMNS}})
    return values


def settings_table(study: Study) -> pd.DataFrame:
    extra = [k for k in searched_keys(study) if k not in TRIAL_COLUMNS]
    columns = ["trial_id", "trial_label", *TRIAL_COLUMNS, *extra]
    rows = [{"trial_id": t.trial_id, **trial_settings(t, extra)} for t in study.trials.values()]
    return _typed(pd.DataFrame(rows, columns=columns))


def results_table(study: Study, evaluations: pd.DataFrame, eval_keys: Sequence[str]) -> pd.DataFrame:
    """Join each (trial, epoch) with its checkpoint's evaluation rows under the current settings."""
    evals = evaluations[evaluations["eval_key"].isin(list(eval_keys))]
    evals = evals[evals["metric"] != DIMENSION_METRIC]  # the SPoSE dimensions: analysis.dimensions
    index = pd.DataFrame(
        [
            {
                "trial_id": e.trial_id,
                "epoch": e.epoch,
                "inherited": e.inherited,
                "checkpoint_key": checkpoint_key(e.checkpoint),
            }
            for e in study.entries
        ],
        columns=["trial_id", "epoch", "inherited", "checkpoint_key"],
    )
    frame = index.merge(evals, on="checkpoint_key", how="inner")
    settings = settings_table(study)
    frame = frame.merge(settings, on="trial_id", how="left")
    frame = d.add_baseline_delta(frame, ["epoch", "dataset", "reference", "metric"])
    extra = [c for c in settings.columns if c not in RESULT_COLUMNS]
    frame = frame[RESULT_COLUMNS + extra + ["checkpoint_key", "eval_key"]]
    frame = frame.sort_values(["trial_id", "epoch", "dataset", "reference", "metric"]).reset_index(drop=True)
    return _typed(frame)


def training_table(study: Study) -> pd.DataFrame:
    """One row per (trial, epoch) of the logged training history (NaN where a run diverged)."""
    settings = settings_table(study).set_index("trial_id")
    rows = []
    for trial in study.trials.values():
        for row in trial.history:
            rows.append({"trial_id": trial.trial_id, **{k: row.get(k) for k in TRAINING_COLUMNS}})
    frame = pd.DataFrame(rows, columns=["trial_id", *TRAINING_COLUMNS])
    frame = frame.drop_duplicates(["trial_id", "epoch"], keep="last")
    frame = frame.join(settings, on="trial_id").sort_values(["trial_id", "epoch"])
    return _typed(frame.reset_index(drop=True))


def per_epoch_measures(results: pd.DataFrame, training: pd.DataFrame) -> pd.DataFrame:
    """(trial_id, epoch) rows: val_loss, inherited, alignment, target_rsa and one column per evaluation measure."""
    cols = {"val_loss": "val_loss", "inherited": "inherited"}
    cols.update(
        {name: src for name, src in d.TRAINING_MEASURES.items() if src in training and training[src].notna().any()}
    )
    frame = training[["trial_id", "epoch", *cols.values()]].rename(columns={v: k for k, v in cols.items()})
    if len(results):
        wide = results.assign(
            measure=[
                d.measure_name(*r)
                for r in zip(results["dataset"], results["reference"], results["metric"], strict=False)
            ]
        )
        wide = wide.pivot_table(
            index=["trial_id", "epoch"], columns="measure", values="value", aggfunc="first", dropna=False
        ).reset_index()
        wide.columns.name = None
        frame = frame.merge(wide, on=["trial_id", "epoch"], how="outer")
    frame["inherited"] = frame["inherited"].fillna(False).astype(bool)
    return frame.sort_values(["trial_id", "epoch"]).reset_index(drop=True)


def summary_table(
    results: pd.DataFrame, training: pd.DataFrame, rule: str = "min_val_loss", per_epoch: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per perturbed trial (:func:`analysis.definitions.summary_table`); ``per_epoch``: the
    :func:`per_epoch_measures` of ``results`` and ``training`` when the caller has it already."""
    trials = training.drop_duplicates("trial_id")
    if trials.empty:
        return pd.DataFrame(columns=["trial_id", "baseline_id", *d.WINDOW])
    per_epoch = per_epoch_measures(results, training) if per_epoch is None else per_epoch
    frame = d.summary_table(per_epoch, trials, rule)
    return _typed(frame) if len(frame) else pd.DataFrame(columns=["trial_id", "baseline_id", *d.WINDOW])


def diverged_trials(training: pd.DataFrame, results: pd.DataFrame | None = None) -> list[str]:
    """Trials with a non-finite training or validation loss on one of their own epochs, or with
    non-finite predictions (NaN evaluation values) at one of them."""
    own = d.own_epochs(training)
    bad = set(
        own.loc[~np.isfinite(own["val_loss"].astype(float)) | ~np.isfinite(own["train_loss"].astype(float)), "trial_id"]
    )
    if results is not None and len(results):
        own_results = results[(results["epoch"] >= 0) & ~results["inherited"]]
        bad |= set(own_results.loc[own_results["value"].isna(), "trial_id"])
    return sorted(bad)


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Stable dtypes (parquet-friendly): floats for numbers that may be missing, bools, ints."""
    for col in _FLOAT_COLUMNS:
        if col in frame:
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(np.float64)
    for col in _BOOL_COLUMNS:
        if col in frame:
            frame[col] = frame[col].fillna(False).astype(bool)
    for col in _INT_COLUMNS:
        if col in frame:
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("Int64")
    for col in frame.columns:
        if (
            frame[col].dtype == object
            and frame[col].map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)).all()
        ):
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame
