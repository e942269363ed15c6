"""The analysis definitions, as the published notebooks use them: one pure module (no I/O) that
tables, figures and the report all call.

- **Own epochs.** A run's own epochs are those it trained itself: never the initial evaluation
  (epoch -1), never epochs a fork inherited from its baseline, and for a perturbed trial only from
  its window start (``perturb_epoch``) on (the published fork's ``training_res.csv`` starts there).
- **Truncation** (``min_val_loss``, the default, as ``load_training_results`` and the analysis
  notebook): keep a run's own epochs up to and including its first minimum validation loss
  (non-finite losses never count as the minimum); the baseline is truncated the same way.
  ``none`` keeps every own epoch. ``baseline_only`` (the published heatmaps, ``all_figures.ipynb``):
  the baseline truncated at its minimum validation loss, the perturbed runs not truncated.
- **Summary of a perturbed trial** (one row each): for every measure (the triplet behavioural RSA
  ``alignment``, ``target_rsa`` where logged, each evaluation set/ROI), the maximum over the trial's
  truncated own epochs and its epoch, the baseline's maximum over *its* truncated own epochs, and
  the deviation ``max - baseline max`` (``plot_behavioral_alignment_heatmap``); likewise the
  minimum validation loss and ``min - baseline min`` (``plot_min_test_loss_heatmap``).
- **Window completed**: a perturbed trial counts as finished only if it trained through its whole
  window (its last own epoch >= ``perturb_epoch + perturb_length - 1``); others stay in the summary
  with ``window_completed`` False and are left out of the per-window report and the heatmaps.
- **Per-epoch change** (``delta``): a value minus its baseline's at the same epoch (same dataset,
  reference and metric), as the single-epoch notebooks (``single_epoch_dba.py``).
- **Seed bands**: the mean over seeds with the seed range, or a percentile bootstrap interval of
  the mean (seeds resampled with replacement).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from hba_sweep.foundation.choices import TRUNCATE_RULES

ALIGNMENT = "alignment"  # the triplet behavioural RSA logged in training (behavioral_rsa_rho)
TRAINING_MEASURES = {"alignment": "behavioral_rsa_rho", "target_rsa": "target_rsa_rho"}
WINDOW = ["perturb_type", "perturb_epoch", "perturb_length"]


def measure_name(dataset: str, reference: str, metric: str) -> str:
    """The column stem of an evaluation measure, e.g. ``things_fmri/V1/rsa_spearman``."""
    return f"{dataset}/{reference}/{metric}"


def own_epochs(rows: pd.DataFrame, perturb_epoch: int | None = None) -> pd.DataFrame:
    """The rows of one run's epochs it trained itself (see the module doc), sorted by epoch.

    ``rows``: one run's per-epoch rows with ``epoch`` and (optionally) ``inherited``;
    ``perturb_epoch``: the window start of a perturbed trial, None for a baseline.
    """
    keep = rows["epoch"] >= 0
    if "inherited" in rows:
        keep &= ~rows["inherited"].fillna(False).astype(bool)
    if perturb_epoch is not None and not pd.isna(perturb_epoch):
        keep &= rows["epoch"] >= int(perturb_epoch)
    return rows[keep].sort_values("epoch")


def rule_for(rule: str, baseline: bool) -> str:
    """The per-run rule of a study rule: ``baseline_only`` is ``min_val_loss`` for baselines, ``none`` for the rest."""
    if rule == "baseline_only":
        return "min_val_loss" if baseline else "none"
    return rule


def truncation_epoch(rows: pd.DataFrame, rule: str = "min_val_loss") -> float:
    """The last epoch kept: the first epoch of minimum finite ``val_loss`` (or the last epoch for
    ``none``); NaN when no epoch qualifies (no rows, or no finite loss)."""
    if rule not in TRUNCATE_RULES:
        raise ValueError(f"truncate must be one of {TRUNCATE_RULES}, got {rule!r}")
    if rows.empty:
        return float("nan")
    if rule == "baseline_only":
        raise ValueError("baseline_only is a study rule: resolve it per run with rule_for(rule, baseline)")
    if rule == "none":
        return float(rows["epoch"].max())
    loss = pd.to_numeric(rows["val_loss"], errors="coerce").where(lambda v: np.isfinite(v))
    if loss.notna().sum() == 0:
        return float("nan")
    return float(rows.loc[loss.idxmin(), "epoch"])


def truncate(rows: pd.DataFrame, rule: str = "min_val_loss") -> tuple[pd.DataFrame, float]:
    """(own rows up to the truncation epoch, that epoch); ``rows`` as returned by :func:`own_epochs`."""
    last = truncation_epoch(rows, rule)
    if np.isnan(last):
        return rows.iloc[0:0], last
    return rows[rows["epoch"] <= last], last


def _extreme(rows: pd.DataFrame, column: str, mode: str) -> tuple[float, float]:
    """(best finite value, its first epoch) of ``column``; (NaN, NaN) without one."""
    if column not in rows:
        return float("nan"), float("nan")
    values = pd.to_numeric(rows[column], errors="coerce").where(lambda v: np.isfinite(v))
    if values.notna().sum() == 0:
        return float("nan"), float("nan")
    at = values.idxmax() if mode == "max" else values.idxmin()
    return float(values[at]), float(rows.loc[at, "epoch"])


def run_extremes(
    rows: pd.DataFrame, measures: Iterable[str], rule: str, perturb_epoch: int | None = None
) -> dict[str, float]:
    """One run's truncation epoch, min validation loss (and epoch) and max of each measure (and epoch)."""
    kept, last = truncate(own_epochs(rows, perturb_epoch), rule)
    out = {"truncation_epoch": last, "n_own_epochs": float(len(kept))}
    out["min_val_loss"], out["min_val_loss_epoch"] = _extreme(kept, "val_loss", "min")
    for name in measures:
        out[f"max_{name}"], out[f"max_{name}_epoch"] = _extreme(kept, name, "max")
    return out


def window_completed(last_epoch: float, perturb_epoch, perturb_length) -> bool:
    """Whether a run trained through its whole perturbation window (else it is no finished perturbed trial)."""
    if pd.isna(last_epoch) or pd.isna(perturb_epoch) or pd.isna(perturb_length):
        return False
    return last_epoch >= int(perturb_epoch) + int(perturb_length) - 1


def completed(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary rows of trials whose window completed (all rows of a table without the column)."""
    return summary[summary["window_completed"].astype(bool)] if "window_completed" in summary else summary


def summary_table(per_epoch: pd.DataFrame, trials: pd.DataFrame, rule: str = "min_val_loss") -> pd.DataFrame:
    """One row per perturbed trial with a baseline: the published max/min deviations (module doc).

    ``per_epoch``: (trial_id, epoch) rows with ``val_loss``, ``inherited`` and one column per measure
    (``alignment``, ``target_rsa``, evaluation measures); ``trials``: one row per trial with
    ``trial_id``, ``baseline_id``, ``is_baseline`` and the perturbation settings.
    """
    measures = [c for c in per_epoch.columns if c not in ("trial_id", "epoch", "val_loss", "inherited")]
    by_trial = {tid: rows for tid, rows in per_epoch.groupby("trial_id")}
    empty = per_epoch.iloc[0:0]
    base_cache: dict[str, dict[str, float]] = {}
    records = []
    for _, t in trials.iterrows():
        if t["is_baseline"] or pd.isna(t.get("baseline_id")):
            continue
        bid = t["baseline_id"]
        if bid not in base_cache:
            base_cache[bid] = run_extremes(by_trial.get(bid, empty), measures, rule_for(rule, True))
        base = base_cache[bid]
        rows = by_trial.get(t["trial_id"], empty)
        own = run_extremes(rows, measures, rule_for(rule, False), t["perturb_epoch"])
        trained = own_epochs(rows, t["perturb_epoch"])["epoch"]
        last = float(trained.max()) if len(trained) else float("nan")
        record = {
            "trial_id": t["trial_id"],
            "baseline_id": bid,
            **{k: t.get(k) for k in ("trial_label", *WINDOW, "random_seed", "perturb_seed")},
            "last_epoch": last,
            "window_completed": window_completed(last, t["perturb_epoch"], t["perturb_length"]),
            "truncation_epoch": own["truncation_epoch"],
            "baseline_truncation_epoch": base["truncation_epoch"],
            "min_val_loss": own["min_val_loss"],
            "min_val_loss_epoch": own["min_val_loss_epoch"],
            "baseline_min_val_loss": base["min_val_loss"],
            "min_val_loss_deviation": own["min_val_loss"] - base["min_val_loss"],
        }
        for name in measures:
            record[f"max_{name}"] = own[f"max_{name}"]
            record[f"max_{name}_epoch"] = own[f"max_{name}_epoch"]
            record[f"baseline_max_{name}"] = base[f"max_{name}"]
            record[f"max_{name}_deviation"] = own[f"max_{name}"] - base[f"max_{name}"]
        records.append(record)
    return pd.DataFrame(records)


def add_baseline_delta(
    frame: pd.DataFrame, keys: Sequence[str], value: str = "value", baseline_id: str = "baseline_id"
) -> pd.DataFrame:
    """``frame`` with ``baseline_value`` (the baseline trial's ``value`` at the same ``keys``, e.g.
    epoch/dataset/reference/metric) and ``delta = value - baseline_value``; NaN where there is none."""
    base = frame[["trial_id", *keys, value]].rename(columns={"trial_id": baseline_id, value: "baseline_value"})
    base = base.drop_duplicates([baseline_id, *keys])
    out = frame.merge(base, on=[baseline_id, *keys], how="left") if len(frame) else frame.assign(baseline_value=[])
    out["baseline_value"] = pd.to_numeric(out["baseline_value"], errors="coerce").astype(np.float64)
    out["delta"] = pd.to_numeric(out[value], errors="coerce") - out["baseline_value"]
    return out


def seed_band(values: Sequence[float], n_boot: int = 0, seed: int = 0, ci: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) over seeds: the seed range, or with ``n_boot`` > 0 the percentile bootstrap
    interval of the mean (seeds drawn with replacement, numpy ``default_rng(seed)``). NaNs dropped."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    if n_boot <= 0 or x.size == 1:
        return float(x.mean()), float(x.min()), float(x.max())
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(int(n_boot), x.size))].mean(axis=1)
    alpha = (1.0 - ci) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(x.mean()), float(low), float(high)


def window_table(summary: pd.DataFrame, columns: Sequence[str], by: Sequence[str] = WINDOW) -> pd.DataFrame:
    """Per (type, start epoch, length[, group settings ``by`` adds]): number of seeds, then mean and sd
    over seeds of ``columns``."""
    by = list(by)
    if summary.empty:
        return pd.DataFrame(columns=[*by, "n"])
    grouped = summary.groupby(by, dropna=False)
    out = grouped.size().rename("n").to_frame()
    for col in columns:
        out[f"{col}_mean"] = grouped[col].mean()
        out[f"{col}_sd"] = grouped[col].std()
    return out.reset_index().sort_values(by).reset_index(drop=True)


def best_trial(
    training: pd.DataFrame, metric: str, mode: str, trials: Mapping[str, Mapping] | None = None
) -> dict | None:
    """The trial with the best ``metric`` (``mode`` max|min) over its own logged epochs (epoch >= 0,
    not inherited): ``{trial_id, epoch, value, config}``; None if no trial logged it."""
    if metric not in training or mode not in ("max", "min"):
        return None
    rows = own_epochs(training)
    values = pd.to_numeric(rows[metric], errors="coerce").where(lambda v: np.isfinite(v))
    if values.notna().sum() == 0:
        return None
    at = values.idxmax() if mode == "max" else values.idxmin()
    tid = rows.loc[at, "trial_id"]
    return {
        "trial_id": tid,
        "epoch": int(rows.loc[at, "epoch"]),
        "value": float(values[at]),
        "config": dict((trials or {}).get(tid, {})),
    }
