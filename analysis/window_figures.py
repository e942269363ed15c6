"""Shared drawing helpers and the per-window figures, drawn from the tidy tables with
:mod:`analysis.definitions` (:func:`analysis.figures.draw_all` writes them):

- ``change_<type>.png``: per perturbation type, the per-epoch change vs the baseline (same seed,
  same epoch) in behavioural alignment and validation loss; one panel per (start epoch, length),
  the window shaded, mean over seeds with its 95% t interval (no band with one seed).
- ``heatmap_<measure>.png``: the summary deviations (max alignment, min validation loss, ...)
  over start epoch x length, per type, on one symmetric colour scale shared by the types; windows
  significant after BH correction framed and starred; ``heatmap_<measure>_seed<k>.png`` per seed
  on request.

The helpers (:class:`NoData`, :func:`label_of`, :func:`gapped`, :func:`mean_and_interval`) serve
every figure module of the analysis.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis import definitions as d
from analysis.plotting import Figure, Rectangle, plt
from analysis.statistics import t_interval

LABELS = {
    "alignment": "behavioural alignment (triplet RSA)",
    "val_loss": "validation loss (MSE)",
    "target_rsa": "target RSA",
}


class NoData(Exception):
    """A figure has nothing to draw; the message says why."""


def label_of(measure: str) -> str:
    return LABELS.get(measure, measure.replace("/", " · "))


def gapped(epochs: Sequence[int], values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Every integer epoch in range, NaN where there is no value: lines break over missing epochs."""
    s = pd.Series(np.asarray(values, dtype=float), index=np.asarray(epochs, dtype=int))
    s = s[~s.index.duplicated()].sort_index()
    if s.empty:
        return np.array([]), np.array([])
    full = np.arange(s.index.min(), s.index.max() + 1)
    return full.astype(float), s.reindex(full).to_numpy(dtype=float)


# ---- per-epoch change vs baseline -------------------------------------------------------
def epoch_deltas(training: pd.DataFrame) -> pd.DataFrame:
    """Per perturbed trial and epoch (>= 0): the change vs its baseline in alignment and val loss."""
    frame = training[training["epoch"] >= 0].rename(columns={"behavioral_rsa_rho": "alignment"})
    out = None
    for col in ("alignment", "val_loss"):
        part = d.add_baseline_delta(frame.rename(columns={col: "_v"}), ["epoch"], value="_v")
        part = part[~part["is_baseline"] & part["baseline_id"].notna()]
        part = part[["trial_id", "epoch", *d.WINDOW, "random_seed", "delta"]].rename(columns={"delta": col})
        out = part if out is None else out.merge(part[["trial_id", "epoch", col]], on=["trial_id", "epoch"])
    return out


def mean_and_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): the 95% t interval of the mean over seeds (NaN band with one seed)."""

    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    return (float(x.mean()) if x.size else float("nan"), *t_interval(x))


def change_figure(deltas: pd.DataFrame, ptype: str) -> Figure:
    """Panels (measure x length) by start epoch for one perturbation type; mean over seeds with its 95% CI."""
    rows = deltas[deltas["perturb_type"] == ptype]
    if rows.empty:
        raise NoData(f"no {ptype} trials with a baseline")
    starts = sorted(rows["perturb_epoch"].dropna().unique())
    lengths = sorted(rows["perturb_length"].dropna().unique())
    measures = ("alignment", "val_loss")
    grid = [(m, n) for m in measures for n in lengths]
    fig, axes = plt.subplots(
        len(grid), len(starts), figsize=(3.2 * len(starts) + 1, 2.4 * len(grid)), squeeze=False, sharex=True
    )
    band = "95% t interval of the mean over seeds (none with one seed)"
    for (measure, length), ax_row in zip(grid, axes, strict=False):
        for start, ax in zip(starts, ax_row, strict=False):
            cell = rows[(rows["perturb_epoch"] == start) & (rows["perturb_length"] == length)]
            ax.axvspan(start - 0.5, start + length - 0.5, color="orange", alpha=0.15, lw=0)
            ax.axhline(0, color="k", lw=0.7)
            if not cell.empty:
                stats = [(e, *mean_and_interval(g[measure].tolist())) for e, g in cell.groupby("epoch")]
                e, mean, low, high = (np.array(v, dtype=float) for v in zip(*stats, strict=False))
                x, m = gapped(e, mean)
                ax.plot(x, m, color="C0", marker="o", ms=3, label="mean over seeds")
                ax.fill_between(x, gapped(e, low)[1], gapped(e, high)[1], color="C0", alpha=0.25, lw=0)
            else:
                ax.text(0.5, 0.5, "no trials", transform=ax.transAxes, ha="center", va="center", color="gray")
            ax.set_title(f"start {int(start)}, length {int(length)}", fontsize=9)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=8)
        ax_row[0].set_ylabel(f"Δ {label_of(measure)}", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(f"{ptype}: change vs baseline per epoch (window shaded; band: {band})", fontsize=10)
    fig.text(
        0.5,
        -0.01,
        "below 0: the perturbation lowered the measure; a band that excludes 0 marks an epoch whose "
        "change is unlikely to be seed noise (uncorrected)",
        ha="center",
        fontsize=8,
    )
    return fig


# ---- heatmaps -----------------------------------------------------------------------------
def heatmap_grids(summary: pd.DataFrame, column: str) -> dict[str, pd.DataFrame]:
    """Per type: mean over seeds of ``column``, lengths (rows) x start epochs (columns); trials whose
    window did not complete are left out."""
    rows = d.completed(summary.dropna(subset=[column]) if column in summary else summary.iloc[0:0])
    return {
        ptype: g.pivot_table(index="perturb_length", columns="perturb_epoch", values=column, aggfunc="mean")
        .sort_index()
        .sort_index(axis=1)
        for ptype, g in rows.groupby("perturb_type")
    }


def heatmap_figure(
    summary: pd.DataFrame,
    column: str,
    label: str,
    significant: dict[str, set[tuple[int, int]]] | None = None,
    title: str = "",
) -> Figure:
    """Mean over seeds per window, per type; ``significant`` (type -> {(start, length)}) cells are
    framed and starred."""

    tested, significant = significant is not None, significant or {}
    grids = heatmap_grids(summary, column)
    if not grids:
        raise NoData(f"no perturbed trials with a baseline and a value of {column}")
    limit = max(float(np.nanmax(np.abs(g.to_numpy(dtype=float)))) for g in grids.values()) or 1.0
    cmap = plt.get_cmap("RdBu_r" if "loss" in column else "RdBu")  # red: worse than the baseline, blue: better
    fig, axes = plt.subplots(1, len(grids), figsize=(3.2 * len(grids) + 1.5, 3.4), squeeze=False, layout="constrained")
    image = None
    for ax, (ptype, grid) in zip(axes[0], grids.items(), strict=False):
        values = grid.to_numpy(dtype=float)
        image = ax.imshow(
            np.ma.masked_invalid(values), cmap=cmap, vmin=-limit, vmax=limit, origin="lower", aspect="auto"
        )
        ax.set_xticks(range(len(grid.columns)), [str(int(c)) for c in grid.columns])
        ax.set_yticks(range(len(grid.index)), [str(int(i)) for i in grid.index])
        for (i, j), value in np.ndenumerate(values):
            if np.isfinite(value):
                r, g, b, _ = cmap((value + limit) / (2 * limit))
                dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
                star = (int(grid.columns[j]), int(grid.index[i])) in significant.get(ptype, set())
                ax.text(
                    j,
                    i,
                    f"{value:+.3g}" + ("*" if star else ""),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if dark else "black",
                    fontweight="bold" if star else "normal",
                )
                if star:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="black", lw=2.5))
        ax.set_xlabel("start epoch")
        ax.set_ylabel("length (epochs)")
        ax.set_title(ptype, fontsize=10)
    fig.colorbar(image, ax=list(axes[0]), shrink=0.9, label=f"{label} (mean over seeds; red: worse)")
    marks = (
        (
            "\nframed *: significant after BH correction over all windows"
            + ("" if any(significant.values()) else " (no window is)")
        )
        if tested
        else ""
    )
    fig.suptitle(title or f"{label}: over each trial's own epochs{marks}", fontsize=10)
    return fig
