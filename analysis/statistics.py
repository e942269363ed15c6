"""Which windows change alignment, with what confidence: tests per window and measure, corrected.

Per window (perturbation type, start epoch, length) and summary measure (a ``*_deviation``
column of ``summary.parquet``), over the seeds of the window's finished trials:

- **mean** of the deviation, and a 95% **t interval** of the mean (mean +- t(n-1) sd / sqrt(n));
- **one-sample t-test** against 0 (``scipy.stats.ttest_1samp``; assumes the seed deviations are
  independent draws from a normal distribution) and a **sign-flip permutation test** (the mean
  over every 2^n sign pattern when 2^n <= 9999, else 9999 random patterns;
  ``scipy.stats.permutation_test``; assumes only that each deviation is symmetric about 0 under the
  null; its smallest p is 2 / 2^n). ``test`` chooses which p is corrected (default ``t``);
- with **one seed**, the paired stimulus bootstrap of that trial's deviation (its draws from
  :func:`analysis.bootstrap.summary_draws`; percentile interval, two-sided bootstrap p), where the
  measure has draws; otherwise no test (p NaN, never significant).

**Multiple comparisons**: Benjamini-Hochberg q-values over all windows of the study (every type)
per measure (``scipy.stats.false_discovery_control``); a window is significant when q <= ``alpha``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.stats

from analysis import definitions as d
from analysis.bootstrap import bootstrap_p, percentile_ci
from hba_sweep.foundation.choices import STAT_TESTS as TESTS

TEST_NAMES = {
    "t": "one-sample t-test over seeds",
    "sign_flip": "sign-flip permutation test over seeds",
    "bootstrap": "paired stimulus bootstrap (one seed)",
    "none": "no test (one seed, no stimulus draws)",
}
STAT_COLUMNS = [
    *d.WINDOW,
    "measure",
    "n",
    "mean",
    "sd",
    "ci_low",
    "ci_high",
    "p_t",
    "p_sign_flip",
    "exact",
    "p_bootstrap",
    "test",
    "p",
    "q",
    "significant",
]
MAX_PERMUTATIONS = 9999


def deviation_columns(summary: pd.DataFrame) -> list[str]:
    """The summary's deviation measures (max alignment, min val loss, every evaluation measure)."""
    return [c for c in summary.columns if c.endswith("_deviation")]


def t_interval(x: np.ndarray, ci: float = 0.95) -> tuple[float, float]:
    """The t interval of the mean of ``x`` (NaN with fewer than two values)."""
    if x.size < 2:
        return float("nan"), float("nan")
    half = scipy.stats.t.ppf(0.5 + ci / 2.0, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return float(x.mean() - half), float(x.mean() + half)


def sign_flip_p(x: np.ndarray, seed: int = 0) -> tuple[float, bool]:
    """(two-sided p of the sign-flip permutation test of mean 0, whether it enumerated every pattern)."""
    if x.size < 2 or np.all(x == 0):
        return (1.0 if x.size >= 2 else float("nan")), x.size >= 2
    result = scipy.stats.permutation_test(
        (x,),
        np.mean,
        permutation_type="samples",
        vectorized=False,
        n_resamples=MAX_PERMUTATIONS,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    return float(result.pvalue), bool(2**x.size <= MAX_PERMUTATIONS)


def window_test(
    values: Sequence[float], draws: np.ndarray | None = None, test: str = "t", seed: int = 0
) -> dict[str, float | str | bool]:
    """The statistics of one window and measure (module doc); ``draws``: the one seed's bootstrap draws."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    out: dict[str, float | str | bool] = {
        "n": int(x.size),
        "mean": float(x.mean()) if x.size else float("nan"),
        "sd": float(x.std(ddof=1)) if x.size > 1 else float("nan"),
    }
    out["ci_low"], out["ci_high"] = t_interval(x)
    if x.size >= 2:
        varies = np.ptp(x) > 1e-12 * max(1.0, float(np.abs(x).max()))  # equal up to rounding: no variance
        out["p_t"] = float(scipy.stats.ttest_1samp(x, 0.0).pvalue) if varies else (1.0 if x.mean() == 0 else 0.0)
        out["p_sign_flip"], out["exact"] = sign_flip_p(x, seed)
        out["p_bootstrap"] = float("nan")
        out["test"] = test
        out["p"] = out["p_t"] if test == "t" else out["p_sign_flip"]
        return out
    out.update(p_t=float("nan"), p_sign_flip=float("nan"), exact=False, p_bootstrap=float("nan"))
    if x.size == 1 and draws is not None and np.isfinite(draws).any():
        out["ci_low"], out["ci_high"] = percentile_ci(draws)
        out["p_bootstrap"] = bootstrap_p(draws)
        out.update(test="bootstrap", p=out["p_bootstrap"])
    else:
        out.update(test="none", p=float("nan"))
    return out


def bh_q(p: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg q-values of the finite p-values (NaN stays NaN)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = scipy.stats.false_discovery_control(p[ok], method="bh")
    return q


def window_statistics(
    summary: pd.DataFrame,
    draws: Mapping[tuple[str, str], np.ndarray] | None = None,
    test: str = "t",
    alpha: float = 0.05,
    seed: int = 0,
    by: Sequence[str] = d.WINDOW,
) -> pd.DataFrame:
    """One row per (window, measure) of the finished trials: :func:`window_test`, then BH q per measure.

    ``draws``: (trial_id, deviation column) -> the stimulus-bootstrap draws of that trial's deviation;
    ``by``: the window columns and the group settings that separate trials of one window (analysis.groups).
    """
    if test not in TESTS:
        raise ValueError(f"test must be one of {TESTS}, got {test!r}")
    by = list(by)
    done = d.completed(summary)
    records = []
    for measure in deviation_columns(done):
        for window, rows in done.groupby(by, dropna=False):
            one = (draws or {}).get((rows["trial_id"].iloc[0], measure)) if len(rows) == 1 else None
            records.append(
                {
                    **dict(zip(by, window, strict=False)),
                    "measure": measure,
                    **window_test(rows[measure].tolist(), one, test, seed),
                }
            )
    extra = [c for c in by if c not in d.WINDOW]
    table = pd.DataFrame(records, columns=[*d.WINDOW, *extra, *STAT_COLUMNS[len(d.WINDOW) : -2]])
    table["q"] = np.nan
    for _, idx in table.groupby("measure").groups.items():
        table.loc[idx, "q"] = bh_q(table.loc[idx, "p"])
    table["significant"] = table["q"] <= alpha
    return table.sort_values(["measure", *by]).reset_index(drop=True)


def with_window_statistics(summary: pd.DataFrame, stats: pd.DataFrame, by: Sequence[str] = d.WINDOW) -> pd.DataFrame:
    """``summary`` with, per deviation column c, its window's ``c_ci_low``, ``c_ci_high``, ``c_p``, ``c_q``
    and ``c_test`` (NaN for trials whose window did not complete); ``by`` as in :func:`window_statistics`."""
    out = summary
    for measure, rows in stats.groupby("measure"):
        cols = rows[[*by, "ci_low", "ci_high", "p", "q", "test"]]
        cols = cols.rename(columns={c: f"{measure}_{c}" for c in ("ci_low", "ci_high", "p", "q", "test")})
        out = out.merge(cols, on=list(by), how="left")
        late = ~out["window_completed"].astype(bool) if "window_completed" in out else np.zeros(len(out), bool)
        out.loc[late, [f"{measure}_{c}" for c in ("ci_low", "ci_high", "p", "q", "test")]] = np.nan
    return out


def significant_cells(stats: pd.DataFrame, measure: str) -> dict[str, set[tuple[int, int]]]:
    """Per type, the (start epoch, length) windows significant for ``measure``."""
    rows = stats[(stats["measure"] == measure) & stats["significant"]]
    return {
        t: {(int(s), int(n)) for s, n in zip(g["perturb_epoch"], g["perturb_length"], strict=False)}
        for t, g in rows.groupby("perturb_type")
    }


def answer(stats: pd.DataFrame, ptype: str, measure: str, alpha: float = 0.05) -> str:
    """The sentence: which start epochs (and lengths) change ``measure`` at q <= alpha, in which direction."""
    rows = stats[(stats["perturb_type"] == ptype) & (stats["measure"] == measure)]
    tests = ", ".join(sorted({TEST_NAMES[t] for t in rows["test"]}))
    hits = rows[rows["significant"]]
    if hits.empty:
        best = rows["q"].min()
        smallest = f"smallest q = {best:.3g}" if np.isfinite(best) else "no window could be tested"
        return (
            f"no window of {len(rows)} changes it significantly at q ≤ {alpha:g} ({smallest}; {tests}; "
            "BH over all windows of the study)."
        )
    parts = []
    for start, g in hits.groupby("perturb_epoch"):
        lengths = ", ".join(str(int(n)) for n in sorted(g["perturb_length"]))
        signs = {"higher" if m > 0 else "lower" for m in g["mean"]}
        parts.append(f"start epoch {int(start)} (length {lengths}; {' and '.join(sorted(signs))} than the baseline)")
    return (
        f"significant at q ≤ {alpha:g} for {'; '.join(parts)} - {len(hits)} of {len(rows)} windows ({tests}; "
        "BH over all windows of the study)."
    )
