"""Which SPoSE dimensions move: per window, the change of each of the 66 predicted dimensions.

The evaluation stores, per checkpoint, the mean prediction of every dimension over the THINGS
evaluation images (``evaluations.parquet`` rows with metric ``mean_prediction``, reference = the
dimension's label from the model's 66 prompts). A perturbed trial's change in a dimension at an
epoch is its mean minus its baseline's at the same epoch; per window it is read at the window's
last epoch (``perturb_epoch + perturb_length - 1``, where the perturbation's direct effect ends)
and averaged over seeds; dimensions are ranked by the absolute mean change within each window.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis import definitions as d
from analysis.evaluate import DIMENSION_METRIC, checkpoint_key
from analysis.plotting import plt
from analysis.records import Study
from analysis.window_figures import NoData

COLUMNS = [*d.WINDOW, "epoch", "dimension", "n", "mean_change", "sd_change", "rank"]


def dimension_deltas(
    study: Study, evaluations: pd.DataFrame, eval_keys: Sequence[str], settings: pd.DataFrame
) -> pd.DataFrame:
    """(trial, epoch, dimension) rows of perturbed trials: ``value``, ``baseline_value`` and ``delta``.

    ``settings``: one row per trial (``tables.settings_table``)."""
    rows = evaluations[evaluations["eval_key"].isin(list(eval_keys)) & (evaluations["metric"] == DIMENSION_METRIC)]
    index = pd.DataFrame(
        [
            {"trial_id": e.trial_id, "epoch": e.epoch, "checkpoint_key": checkpoint_key(e.checkpoint)}
            for e in study.entries
        ],
        columns=["trial_id", "epoch", "checkpoint_key"],
    )
    frame = index.merge(rows[["checkpoint_key", "reference", "value"]], on="checkpoint_key")
    frame = frame.rename(columns={"reference": "dimension"}).merge(settings, on="trial_id", how="left")
    frame = d.add_baseline_delta(frame, ["epoch", "dimension"])
    return frame[~frame["is_baseline"].astype(bool) & frame["delta"].notna()]


def window_dimensions(deltas: pd.DataFrame, groups: Sequence[str] = ()) -> pd.DataFrame:
    """Per window (and group settings ``groups``, columns of ``deltas``) and dimension: the change at the
    window's last epoch, mean and sd over seeds, rank (1 = the largest absolute mean change in that window)."""
    by = [*d.WINDOW, *groups]
    columns = [*by, *COLUMNS[len(d.WINDOW) :]]
    if deltas.empty:
        return pd.DataFrame(columns=columns)
    last = deltas["perturb_epoch"].astype(int) + deltas["perturb_length"].astype(int) - 1
    at_end = deltas[deltas["epoch"].astype(int) == last]
    grouped = at_end.groupby([*by, "epoch", "dimension"], dropna=False)["delta"]
    table = pd.concat(
        [grouped.size().rename("n"), grouped.mean().rename("mean_change"), grouped.std().rename("sd_change")], axis=1
    ).reset_index()
    table["rank"] = (
        table.groupby(by, dropna=False)["mean_change"]
        .transform(lambda v: v.abs().rank(ascending=False, method="first"))
        .astype(int)
    )
    return table.sort_values([*by, "rank"]).reset_index(drop=True)[columns]


def top_dimensions(table: pd.DataFrame, ptype: str, top: int = 12) -> pd.DataFrame:
    """Dimensions (rows, by name) x windows (columns) of one type: the mean change of the ``top``
    dimensions with the largest absolute change in any of the type's windows."""
    rows = table[table["perturb_type"] == ptype]
    grid = rows.pivot_table(index="dimension", columns=["perturb_epoch", "perturb_length"], values="mean_change")
    order = grid.abs().max(axis=1).sort_values(ascending=False).index[:top]
    return grid.loc[order]


def dimensions_figure(table: pd.DataFrame, top: int = 12):
    """One panel per type: the top dimensions (named) x windows, coloured by the mean change."""

    types = sorted(table["perturb_type"].dropna().unique()) if len(table) else []
    if not types:
        raise NoData("no SPoSE dimension predictions (the THINGS set was not evaluated) or no perturbed trials")
    grids = {t: top_dimensions(table, t, top) for t in types}
    limit = max(float(np.nanmax(np.abs(g.to_numpy(dtype=float)))) for g in grids.values()) or 1.0
    fig, axes = plt.subplots(
        1,
        len(types),
        figsize=(4.5 + 1.2 * max(g.shape[1] for g in grids.values()) * len(types), 0.32 * top + 1.8),
        squeeze=False,
        layout="constrained",
    )
    image = None
    for ax, (ptype, grid) in zip(axes[0], grids.items(), strict=False):
        image = ax.imshow(grid.to_numpy(dtype=float), cmap="PuOr_r", vmin=-limit, vmax=limit, aspect="auto")
        ax.set_yticks(range(len(grid.index)), list(grid.index), fontsize=8)
        ax.set_xticks(range(grid.shape[1]), [f"start {int(s)}\nlength {int(n)}" for s, n in grid.columns], fontsize=8)
        for (i, j), value in np.ndenumerate(grid.to_numpy(dtype=float)):
            if np.isfinite(value):
                ax.text(
                    j,
                    i,
                    f"{value:+.2g}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if abs(value) > 0.6 * limit else "black",
                )
        ax.set_title(f"{ptype}: top {len(grid.index)} dimensions", fontsize=10)
    fig.colorbar(image, ax=list(axes[0]), shrink=0.8, label="mean predicted dimension - baseline's (mean over seeds)")
    fig.suptitle(
        "Which SPoSE dimensions move: change at the window's last epoch vs the baseline at that epoch "
        "(THINGS evaluation images)",
        fontsize=10,
    )
    return fig
