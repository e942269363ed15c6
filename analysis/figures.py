"""The study's figures (PNG), drawn from the tidy tables with :mod:`analysis.definitions`.

Each ``*_figure`` function returns a matplotlib Figure (tests read the plotted data back from it);
:func:`draw_all` writes them:

- ``baseline_curves.png``: behavioural alignment and validation loss of the baselines over training.
- ``change_<type>.png``: per perturbation type, the per-epoch change vs the baseline (same seed,
  same epoch) in behavioural alignment and validation loss; one panel per (start epoch, length),
  the window shaded, mean over seeds with its 95% t interval (no band with one seed).
- ``ba_vs_loss.png``: behavioural alignment against validation loss (the published curve), every
  trial over its truncated own epochs, baselines in black; ``na_vs_loss_<dataset>.png`` the same
  per neural ROI.
- ``single_epoch_effects.png``: single-epoch perturbations, change vs the baseline at the perturbed
  epoch, one panel per measure family (:mod:`analysis.effects`).
- ``heatmap_<measure>.png``: the summary deviations (max alignment, min validation loss, ...)
  over start epoch x length, per type, on one symmetric colour scale shared by the types; windows
  significant after BH correction framed and starred; ``heatmap_<measure>_seed<k>.png`` per seed
  on request.
- ``spose_dimensions.png``: the SPoSE dimensions that move most per window (:mod:`analysis.dimensions`).

A figure without data is still written, saying why, and the reason goes into the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis import definitions as d  # noqa: E402
from hba_sweep.foundation.io_utils import atomic_write  # noqa: E402

NEURAL = ("things_fmri", "nod")
LABELS = {
    "alignment": "behavioural alignment (triplet RSA)",
    "val_loss": "validation loss (MSE)",
    "target_rsa": "target RSA",
}
HEATMAPS = {
    "max_alignment_deviation": "max behavioural alignment - baseline's",
    "min_val_loss_deviation": "min validation loss - baseline's",
    "max_target_rsa_deviation": "max target RSA - baseline's",
}


class NoData(Exception):
    """A figure has nothing to draw; the message says why."""


def _save(fig: Figure, path: Path) -> None:
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def _placeholder(title: str, reason: str) -> Figure:
    fig, ax = plt.subplots(figsize=(6, 2.5))
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.5, reason, ha="center", va="center", wrap=True)
    return fig


def label_of(measure: str) -> str:
    return LABELS.get(measure, measure.replace("/", " · "))


def _gapped(epochs: Sequence[int], values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Every integer epoch in range, NaN where there is no value: lines break over missing epochs."""
    s = pd.Series(np.asarray(values, dtype=float), index=np.asarray(epochs, dtype=int))
    s = s[~s.index.duplicated()].sort_index()
    if s.empty:
        return np.array([]), np.array([])
    full = np.arange(s.index.min(), s.index.max() + 1)
    return full.astype(float), s.reindex(full).to_numpy(dtype=float)


# ---- baselines ------------------------------------------------------------------------------
def baseline_curves_figure(training: pd.DataFrame) -> Figure:
    base = training[training["is_baseline"]] if len(training) else training
    if base.empty:
        raise NoData("no baseline trials (perturb_type none) in this study")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for _trial, rows in base.sort_values("epoch").groupby("trial_id"):
        label = f"{rows['trial_label'].iloc[0]} (seed {rows['random_seed'].iloc[0]})"
        for ax, col in zip(axes, ("behavioral_rsa_rho", "val_loss"), strict=False):
            ax.plot(*_gapped(rows["epoch"], rows[col]), marker="o", ms=3, label=label)
    for ax, name in zip(axes, ("alignment", "val_loss"), strict=False):
        ax.set_xlabel("epoch (-1: before training)")
        ax.set_ylabel(label_of(name))
        ax.grid(alpha=0.3)
    axes[1].legend(title="baseline", fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    axes[0].set_title("Behavioural alignment over training")
    axes[1].set_title("Validation loss over training")
    return fig


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
    from analysis.statistics import t_interval

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
                x, m = _gapped(e, mean)
                ax.plot(x, m, color="C0", marker="o", ms=3, label="mean over seeds")
                ax.fill_between(x, _gapped(e, low)[1], _gapped(e, high)[1], color="C0", alpha=0.25, lw=0)
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


# ---- alignment vs loss ----------------------------------------------------------------
def _truncated_rows(per_epoch: pd.DataFrame, trials: pd.DataFrame, rule: str) -> list[tuple[pd.Series, pd.DataFrame]]:
    out, by_trial = [], dict(tuple(per_epoch.groupby("trial_id")))  # one pass, not one scan per trial
    for _, t in trials.iterrows():
        rows = by_trial.get(t["trial_id"], per_epoch.iloc[:0])
        own = d.own_epochs(rows, None if t["is_baseline"] else t["perturb_epoch"])
        out.append((t, d.truncate(own, d.rule_for(rule, bool(t["is_baseline"])))[0]))
    return out


def vs_loss_figure(
    per_epoch: pd.DataFrame, trials: pd.DataFrame, measures: Sequence[str], rule: str, title: str
) -> Figure:
    """One panel per measure: the measure against validation loss (x inverted), baselines in black."""
    measures = [m for m in measures if m in per_epoch and per_epoch[m].notna().any()]
    if not measures:
        raise NoData("no values for these measures")
    cols = min(4, len(measures))
    nrows = -(-len(measures) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols + 1.5, 3.2 * nrows), squeeze=False)
    types = sorted(t for t in trials.loc[~trials["is_baseline"], "perturb_type"].dropna().unique())
    colors = {t: f"C{i + 1}" for i, t in enumerate(types)}
    runs = _truncated_rows(per_epoch, trials, rule)
    for ax, measure in zip(axes.flat, measures, strict=False):
        for t, rows in sorted(runs, key=lambda r: bool(r[0]["is_baseline"])):  # baselines drawn last (on top)
            rows = rows.dropna(subset=[measure, "val_loss"])
            if rows.empty:
                continue
            if t["is_baseline"]:
                ax.plot(rows["val_loss"], rows[measure], color="k", lw=2, marker="o", ms=3, zorder=3)
            else:
                ax.plot(rows["val_loss"], rows[measure], color=colors[t["perturb_type"]], lw=0.8, alpha=0.7)
        ax.invert_xaxis()
        ax.set_xlabel("validation loss (MSE), decreasing →")
        ax.set_ylabel(label_of(measure), fontsize=8)
        ax.set_title(label_of(measure), fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(measures) :]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color="k", lw=2, label="baseline")]
    handles += [plt.Line2D([], [], color=c, lw=1, label=t) for t, c in colors.items()]
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


# ---- single-epoch effects ---------------------------------------------------------------
def single_epoch_effects(per_epoch: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Per single-epoch perturbed trial and measure: value at the perturbed epoch minus the baseline's there."""
    single = trials[~trials["is_baseline"] & (trials["perturb_length"] == 1) & trials["baseline_id"].notna()]
    measures = [c for c in per_epoch.columns if c not in ("trial_id", "epoch", "inherited")]
    at = per_epoch.set_index(["trial_id", "epoch"])
    records = []
    for _, t in single.iterrows():
        key, base_key = (t["trial_id"], int(t["perturb_epoch"])), (t["baseline_id"], int(t["perturb_epoch"]))
        if key not in at.index or base_key not in at.index:
            continue
        for m in measures:
            records.append(
                {
                    "trial_id": t["trial_id"],
                    "perturb_type": t["perturb_type"],
                    "perturb_epoch": int(t["perturb_epoch"]),
                    "measure": m,
                    "delta": at.at[key, m] - at.at[base_key, m],
                }
            )
    return pd.DataFrame(records, columns=["trial_id", "perturb_type", "perturb_epoch", "measure", "delta"])


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
    from matplotlib.patches import Rectangle

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


# ---- all ----------------------------------------------------------------------------------
def draw_all(
    per_epoch: pd.DataFrame,
    training: pd.DataFrame,
    summary: pd.DataFrame,
    out_dir: Path,
    rule: str = "min_val_loss",
    stats: pd.DataFrame | None = None,
    per_seed: bool = False,
    dimensions: pd.DataFrame | None = None,
) -> tuple[list[Path], list[str]]:
    """Write every figure; returns (paths, notes on figures drawn without data).

    ``stats``: :func:`analysis.statistics.window_statistics` (significant heatmap cells are marked);
    ``per_seed``: also one heatmap per seed (as the published notebooks); ``dimensions``:
    :func:`analysis.dimensions.window_dimensions` for ``spose_dimensions.png``."""
    from analysis.dimensions import dimensions_figure
    from analysis.effects import single_epoch_figure
    from analysis.statistics import significant_cells

    out_dir.mkdir(parents=True, exist_ok=True)
    trials = training.drop_duplicates("trial_id") if len(training) else training
    jobs: list[tuple[str, str, callable]] = [
        ("baseline_curves.png", "Baselines over training", lambda: baseline_curves_figure(training))
    ]
    deltas = epoch_deltas(training) if len(training) else pd.DataFrame(columns=d.WINDOW)
    types = sorted(deltas["perturb_type"].dropna().unique()) if len(deltas) else []
    for ptype in types:
        jobs.append((f"change_{ptype}.png", f"{ptype} vs baseline", lambda p=ptype: change_figure(deltas, p)))
    jobs.append(
        (
            "ba_vs_loss.png",
            "Behavioural alignment vs validation loss",
            lambda: vs_loss_figure(
                per_epoch,
                trials,
                ["alignment", "target_rsa"],
                rule,
                "Alignment vs validation loss (truncated own epochs; baselines black)",
            ),
        )
    )
    for dataset in NEURAL:
        measures = [c for c in per_epoch.columns if c.startswith(f"{dataset}/")]
        if measures:
            jobs.append(
                (
                    f"na_vs_loss_{dataset}.png",
                    f"{dataset} vs validation loss",
                    lambda m=measures, ds=dataset: vs_loss_figure(
                        per_epoch,
                        trials,
                        m,
                        rule,
                        f"{ds}: neural alignment per ROI vs validation loss (truncated own epochs; baselines black)",
                    ),
                )
            )
    jobs.append(
        (
            "single_epoch_effects.png",
            "Single-epoch perturbations vs baseline",
            lambda: single_epoch_figure(single_epoch_effects(per_epoch, trials)),
        )
    )
    seeds = sorted(summary["random_seed"].dropna().unique()) if per_seed and "random_seed" in summary else []
    for column, label in HEATMAPS.items():
        if column in summary or column != "max_target_rsa_deviation":
            name = column.replace("_deviation", "")
            marks = significant_cells(stats, column) if stats is not None else None
            jobs.append(
                (f"heatmap_{name}.png", label, lambda c=column, lb=label, m=marks: heatmap_figure(summary, c, lb, m))
            )
            for s in seeds:
                jobs.append(
                    (
                        f"heatmap_{name}_seed{int(s)}.png",
                        f"{label}, seed {int(s)}",
                        lambda c=column, lb=label, s=s: heatmap_figure(
                            summary[summary["random_seed"] == s],
                            c,
                            lb,
                            title=f"{lb}: seed {int(s)} only (as the published per-seed heatmaps)",
                        ),
                    )
                )
    if dimensions is not None:
        jobs.append(("spose_dimensions.png", "Which SPoSE dimensions move", lambda: dimensions_figure(dimensions)))
    paths, notes = [], []
    for name, title, make in jobs:
        try:
            fig = make()
        except NoData as reason:
            fig = _placeholder(title, str(reason))
            notes.append(f"{name}: {reason}")
        _save(fig, out_dir / name)
        paths.append(out_dir / name)
    return paths, notes
