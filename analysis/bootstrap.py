"""The stimulus bootstrap of RSA values, with rsatoolbox's semantics, vectorised over resamples.

A resample draws the n conditions (stimuli, or concepts after averaging) with replacement, as
``rsatoolbox.inference.bootstrap_sample_pattern``; the resampled RDMs are
``RDMs.subsample_pattern`` of the draw: the entries between two copies of the same condition
are NaN and are left out of the comparison, as ``rsatoolbox.rdm.compare`` does (spearman: rank,
centre, cosine; pearson: rsatoolbox's ``corr``; kendall: tau-b). Resample b of every checkpoint
uses the same conditions (``numpy.random.default_rng(seed).integers(0, n, (n_boot, n))``): the
draws of a trial and of its baseline at the same epoch are paired by construction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats

from analysis.definitions import measure_name
from hba_sweep import rsa
from hba_sweep.data.evalsets import load_things_fmri
from hba_sweep.training.scoring import load_references

RSA_DATASETS = ("things", "things_fmri", "nod")
CHUNK_ELEMENTS = 4_000_000  # resampled RDM entries held at once (memory bound for 2000-stimulus sets)


def resample_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) condition indices, drawn with replacement; the same for every checkpoint."""
    return np.random.default_rng(seed).integers(0, n, size=(int(n_boot), int(n)))


def _masked_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Pearson r of a and b, NaN entries (the same in both) left out."""
    keep = np.isfinite(a) & np.isfinite(b)
    count = keep.sum(axis=1)
    a0, b0 = np.where(keep, a, 0.0), np.where(keep, b, 0.0)
    a0 = np.where(keep, a0 - (a0.sum(axis=1) / np.maximum(count, 1))[:, None], 0.0)
    b0 = np.where(keep, b0 - (b0.sum(axis=1) / np.maximum(count, 1))[:, None], 0.0)
    denom = np.sqrt((a0 * a0).sum(axis=1) * (b0 * b0).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a0 * b0).sum(axis=1) / denom
    return np.where((count >= 3) & (denom > 0), r, np.nan)


def rdm_draws(
    model_rdm: np.ndarray, reference_rdm: np.ndarray, indices: np.ndarray, similarity: str = "spearman"
) -> np.ndarray:
    """The RDM similarity of every resample (``indices``: (n_boot, n)); NaN where it is undefined
    (too few distinct conditions, or a constant resampled RDM)."""
    model, ref = np.asarray(model_rdm, dtype=np.float64), np.asarray(reference_rdm, dtype=np.float64)
    n = model.shape[0]
    iu, ju = np.triu_indices(n, k=1)
    out = np.empty(len(indices))
    step = max(1, CHUNK_ELEMENTS // max(1, iu.size))
    for start in range(0, len(indices), step):
        idx = indices[start : start + step]
        rows, cols = idx[:, iu], idx[:, ju]
        same = rows == cols
        a = np.where(same, np.nan, model[rows, cols])
        b = np.where(same, np.nan, ref[rows, cols])
        if similarity == "spearman":
            a = scipy.stats.rankdata(a, axis=1, nan_policy="omit")
            b = scipy.stats.rankdata(b, axis=1, nan_policy="omit")
        if similarity == "kendall":
            out[start : start + len(idx)] = [
                scipy.stats.kendalltau(x[~s], y[~s])[0] for x, y, s in zip(a, b, same, strict=False)
            ]
        else:
            out[start : start + len(idx)] = _masked_pearson(a, b)
    return out


def percentile_ci(draws: np.ndarray, ci: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the finite draws; (NaN, NaN) without any."""
    x = np.asarray(draws, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - ci) / 2.0
    low, high = np.quantile(x, [alpha, 1.0 - alpha])
    return float(low), float(high)


def bootstrap_p(draws: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "the change is 0": twice the smaller share of draws on either
    side of 0, with the +1 correction ((k + 1) / (B + 1)); 1 when every draw is exactly 0."""
    x = np.asarray(draws, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan")
    below, above = (x <= 0).sum(), (x >= 0).sum()
    return float(min(1.0, 2.0 * (min(below, above) + 1) / (x.size + 1)))


def paired_change(trial_draws: np.ndarray, baseline_draws: np.ndarray, ci: float = 0.95) -> tuple[float, float, float]:
    """(CI low, CI high, p) of trial - baseline over the same resamples (paired bootstrap)."""
    diff = np.asarray(trial_draws, dtype=np.float64) - np.asarray(baseline_draws, dtype=np.float64)
    return (*percentile_ci(diff, ci), bootstrap_p(diff))


@dataclass
class Resampler:
    """The stimulus bootstrap of one RSA evaluation set: draws per reference for a checkpoint's predictions."""

    references: dict[str, np.ndarray]  # square reference RDMs over the (grouped) conditions
    distance: str
    similarity: str
    indices: np.ndarray
    groups: list[Any] | None = None

    def draws(self, predictions: np.ndarray) -> dict[str, np.ndarray]:
        x = predictions if self.groups is None else rsa.average_by_group(predictions, self.groups)[1]
        model = rsa.compute_model_rdm(x, self.distance)
        return {name: rdm_draws(model, ref, self.indices, self.similarity) for name, ref in self.references.items()}


def resampler_for(dataset: str, record: Mapping[str, Any], n_images: int, n_boot: int, seed: int) -> Resampler | None:
    """The :class:`Resampler` of an evaluation set from its settings record (``EvalSet.settings``:
    the spec and the score settings); None for sets without RSA or without draws."""
    if dataset not in RSA_DATASETS or n_boot <= 0:
        return None
    spec = record["spec"]
    groups = None
    if dataset == "things_fmri":
        groups = list(load_things_fmri(spec["metadata_csv"], spec["img_dir"]).concepts)
    n = len(dict.fromkeys(groups)) if groups is not None else n_images
    refs = load_references(spec.get("reference_rdms") or {}, n, record["reference_rdm_distance_metric"])
    squares = {name: _square(ref, n) for name, ref in refs.items()}
    return Resampler(
        squares,
        record["model_rdm_distance_metric"],
        record["rsa_similarity_metric"],
        resample_indices(n, n_boot, seed),
        groups,
    )


def _square(ref: np.ndarray, n: int) -> np.ndarray:
    ref = np.asarray(ref, dtype=np.float64)
    if ref.ndim == 1:  # an upper triangle
        square = np.zeros((n, n))
        square[np.triu_indices(n, 1)] = ref
        return square + square.T
    return ref


# ---- the draws of a study's tables ------------------------------------------------------------
def draws_of(results: pd.DataFrame, cache: pd.DataFrame) -> pd.Series:
    """Per row of ``results`` (index aligned): its checkpoint's bootstrap draws (an array), or None."""
    keys = ["checkpoint_key", "eval_key", "reference", "metric"]
    if "boot" not in cache or results.empty:
        return pd.Series([None] * len(results), index=results.index, dtype=object)
    boots = cache.loc[cache["boot"].notna(), [*keys, "boot"]].drop_duplicates(keys, keep="last")
    merged = results[keys].merge(boots, on=keys, how="left")
    return pd.Series(
        [
            None if b is None or (isinstance(b, float) and np.isnan(b)) else np.asarray(b, np.float64)
            for b in merged["boot"]
        ],
        index=results.index,
        dtype=object,
    )


def add_delta_intervals(results: pd.DataFrame, draws: pd.Series, ci: float = 0.95) -> pd.DataFrame:
    """``results`` with ``delta_ci_low``, ``delta_ci_high``, ``delta_p``: the paired bootstrap of each
    row's ``delta`` (its draws minus its baseline's draws at the same epoch, dataset, reference, metric)."""
    out = results.copy()
    out[["delta_ci_low", "delta_ci_high", "delta_p"]] = np.nan
    keys = ["epoch", "dataset", "reference", "metric"]
    own = {
        tuple(k): b
        for k, b in zip(results[["trial_id", *keys]].itertuples(index=False), draws, strict=False)
        if b is not None
    }
    for i, row in enumerate(results[["baseline_id", "trial_id", *keys]].itertuples(index=False)):
        mine, base = draws.iloc[i], own.get((row[0], *row[2:]))
        if mine is not None and base is not None and len(mine) == len(base):
            out.iloc[i, out.columns.get_indexer(["delta_ci_low", "delta_ci_high", "delta_p"])] = paired_change(
                mine, base, ci
            )
    return out


def summary_draws(summary: pd.DataFrame, results: pd.DataFrame, draws: pd.Series) -> dict[tuple[str, str], np.ndarray]:
    """(trial_id, ``max_<measure>_deviation``) -> the bootstrap draws of that deviation: per resample,
    the max over the trial's truncated own epochs minus the max over its baseline's (the epochs
    ``summary.parquet`` used), so trial and baseline share every resample."""

    frame = results.assign(_draws=draws.to_numpy())
    frame = frame[frame["_draws"].notna() & (frame["epoch"] >= 0) & ~frame["inherited"].astype(bool)]
    frame = frame.assign(
        measure=[measure_name(*r) for r in zip(frame["dataset"], frame["reference"], frame["metric"], strict=False)]
    )
    by_run = {key: rows for key, rows in frame.groupby(["trial_id", "measure"])}
    out: dict[tuple[str, str], np.ndarray] = {}

    def best(run: str, measure: str, first: float, last: float) -> np.ndarray | None:
        rows = by_run.get((run, measure))
        if rows is None or np.isnan(last):
            return None
        rows = rows[(rows["epoch"] >= first) & (rows["epoch"] <= last)]
        return np.nanmax(np.stack(rows["_draws"].to_list()), axis=0) if len(rows) else None

    for _, t in summary.iterrows():
        for measure in {m for _, m in by_run}:
            mine = best(t["trial_id"], measure, float(t["perturb_epoch"]), float(t["truncation_epoch"]))
            base = best(t["baseline_id"], measure, 0.0, float(t["baseline_truncation_epoch"]))
            if mine is not None and base is not None and len(mine) == len(base):
                out[(t["trial_id"], f"max_{measure}_deviation")] = mine - base
    return out
