"""The study's figures (PNG), drawn from the tidy tables with :mod:`analysis.definitions`.

Each ``*_figure`` function returns a matplotlib Figure (tests read the plotted data back from it);
:func:`draw_all` writes them:

- ``baseline_curves.png``: behavioural alignment and validation loss of the baselines over training.
- ``change_<type>.png`` and ``heatmap_<measure>.png`` (``heatmap_<measure>_seed<k>.png`` per seed on
  request): the per-window figures of :mod:`analysis.window_figures`.
- ``ba_vs_loss.png``: behavioural alignment against validation loss (the published curve), every
  trial over its truncated own epochs, baselines in black; ``na_vs_loss_<dataset>.png`` the same
  per neural ROI.
- ``single_epoch_effects.png``: single-epoch perturbations, change vs the baseline at the perturbed
  epoch, one panel per measure family (:mod:`analysis.effects`).
- ``spose_dimensions.png``: the SPoSE dimensions that move most per window (:mod:`analysis.dimensions`).

A figure without data is still written, saying why, and the reason goes into the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from analysis import definitions as d
from analysis.dimensions import dimensions_figure
from analysis.effects import single_epoch_figure
from analysis.plotting import Figure, plt
from analysis.statistics import significant_cells
from analysis.window_figures import NoData, change_figure, epoch_deltas, gapped, heatmap_figure, label_of
from hba_sweep.foundation.io_utils import atomic_write

NEURAL = ("things_fmri", "nod")
HEATMAPS = {
    "max_alignment_deviation": "max behavioural alignment - baseline's",
    "min_val_loss_deviation": "min validation loss - baseline's",
    "max_target_rsa_deviation": "max target RSA - baseline's",
}


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


# ---- baselines ------------------------------------------------------------------------------
def baseline_curves_figure(training: pd.DataFrame) -> Figure:
    base = training[training["is_baseline"]] if len(training) else training
    if base.empty:
        raise NoData("no baseline trials (perturb_type none) in this study")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for _trial, rows in base.sort_values("epoch").groupby("trial_id"):
        label = f"{rows['trial_label'].iloc[0]} (seed {rows['random_seed'].iloc[0]})"
        for ax, col in zip(axes, ("behavioral_rsa_rho", "val_loss"), strict=False):
            ax.plot(*gapped(rows["epoch"], rows[col]), marker="o", ms=3, label=label)
    for ax, name in zip(axes, ("alignment", "val_loss"), strict=False):
        ax.set_xlabel("epoch (-1: before training)")
        ax.set_ylabel(label_of(name))
        ax.grid(alpha=0.3)
    axes[1].legend(title="baseline", fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    axes[0].set_title("Behavioural alignment over training")
    axes[1].set_title("Validation loss over training")
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


# ---- all ----------------------------------------------------------------------------------
# the file names draw_all writes (an earlier analysis' figures are removed before drawing)
FIGURE_FILES = (
    "baseline_curves.png",
    "change_*.png",
    "ba_vs_loss.png",
    "na_vs_loss_*.png",
    "single_epoch_effects.png",
    "heatmap_*.png",
    "spose_dimensions.png",
)


def group_parts(
    summary: pd.DataFrame, stats: pd.DataFrame | None, keys: Sequence[str]
) -> list[tuple[str, str, pd.DataFrame, pd.DataFrame | None]]:
    """(file-name suffix, title suffix, summary rows, statistics rows) of each group of ``keys``; one
    part, the whole study, without group keys."""
    keys = [k for k in keys if k in summary]
    if not keys or summary.empty:
        return [("", "", summary, stats)]
    parts = []
    for values in summary[keys].drop_duplicates().itertuples(index=False):
        chosen = dict(zip(keys, values, strict=True))
        rows = summary[(summary[keys] == pd.Series(chosen)).all(axis=1)]
        part_stats = None if stats is None else stats[(stats[keys] == pd.Series(chosen)).all(axis=1)]
        suffix = "_" + "_".join(f"{k}{str(v).replace('/', '-')}" for k, v in chosen.items())
        parts.append((suffix, " (" + ", ".join(f"{k}={v}" for k, v in chosen.items()) + ")", rows, part_stats))
    return parts


def draw_all(
    per_epoch: pd.DataFrame,
    training: pd.DataFrame,
    summary: pd.DataFrame,
    out_dir: Path,
    rule: str = "min_val_loss",
    stats: pd.DataFrame | None = None,
    per_seed: bool = False,
    dimensions: pd.DataFrame | None = None,
    group_keys: Sequence[str] = (),
) -> tuple[list[Path], list[str]]:
    """Write every figure; returns (paths, notes on figures drawn without data).

    ``stats``: :func:`analysis.statistics.window_statistics` (significant heatmap cells are marked);
    ``per_seed``: also one heatmap per seed (as the published notebooks); ``dimensions``:
    :func:`analysis.dimensions.window_dimensions` for ``spose_dimensions.png``; ``group_keys``: the settings
    that separate a window's groups (one heatmap per group, ``heatmap_<measure>_<key><value>.png``)."""

    out_dir.mkdir(parents=True, exist_ok=True)
    for old in (p for pattern in FIGURE_FILES for p in out_dir.glob(pattern)):
        old.unlink()  # figures of an earlier analysis (another grouping, other types) never linger
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
            for suffix, shown, part, part_stats in group_parts(summary, stats, group_keys):
                marks = significant_cells(part_stats, column) if part_stats is not None else None
                lb = f"{label}{shown}"
                jobs.append(
                    (
                        f"heatmap_{name}{suffix}.png",
                        lb,
                        lambda c=column, lb=lb, m=marks, part=part: heatmap_figure(part, c, lb, m),
                    )
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
