"""The study's figures (PNG), drawn from the tidy tables.

- ``baseline_curves.png``: behavioural alignment and validation loss over training, baselines, per seed.
- ``single_epoch_effects.png``: change vs the baseline (same seed, same epoch, at the trial's last
  epoch) in behavioural alignment, validation loss and neural alignment, for single-epoch
  perturbations, per type, against the perturbed epoch; seeds as spread.
- ``heatmap_max_alignment.png`` / ``heatmap_min_loss.png``: deviation of the maximum behavioural
  alignment / minimum validation loss from the baseline's, over start epoch x length, per type.

A figure without data is still written, saying why, and the reason goes into the report.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from hba_sweep.io_utils import atomic_write  # noqa: E402

FIGURES = ("baseline_curves.png", "single_epoch_effects.png", "heatmap_max_alignment.png", "heatmap_min_loss.png")
NEURAL = ("things_fmri", "nod")
MEASURES = {"behavioral": "behavioural alignment (RSA)", "val_loss": "validation loss (MSE)",
            "neural": "neural alignment (RSA, mean over ROIs)"}


def per_epoch(results: pd.DataFrame, training: pd.DataFrame) -> pd.DataFrame:
    """(trial, epoch) -> behavioral, neural, val_loss, plus the trial's settings."""
    rsa = results[results["metric"].str.startswith("rsa_")]
    beh = rsa[rsa["dataset"] == "things"].groupby(["trial_id", "epoch"])["value"].mean().rename("behavioral")
    neu = rsa[rsa["dataset"].isin(NEURAL)].groupby(["trial_id", "epoch"])["value"].mean().rename("neural")
    loss = training.set_index(["trial_id", "epoch"])["val_loss"]
    frame = pd.concat([beh, neu, loss], axis=1).reset_index()
    settings = training.drop_duplicates("trial_id").set_index("trial_id")[
        ["perturb_type", "perturb_epoch", "perturb_length", "random_seed", "baseline_id"]]
    if settings.empty and not results.empty:
        settings = results.drop_duplicates("trial_id").set_index("trial_id")[settings.columns]
    frame = frame.join(settings, on="trial_id")
    return frame.astype({"epoch": "int64"}) if len(frame) else frame


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=120))
    plt.close(fig)


def _placeholder(path: Path, title: str, reason: str) -> str:
    fig, ax = plt.subplots(figsize=(6, 2.5))
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.5, reason, ha="center", va="center", wrap=True)
    _save(fig, path)
    return f"{path.name}: {reason}"


def baseline_curves(frame: pd.DataFrame, path: Path) -> str | None:
    base = frame[frame["perturb_type"] == "none"]
    if base.empty:
        return _placeholder(path, "Baselines over training", "no baseline trials (perturb_type none) in this study")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for seed, rows in base.sort_values("epoch").groupby("random_seed"):
        for ax, col in zip(axes, ("behavioral", "val_loss")):
            ax.plot(rows["epoch"], rows[col], marker="o", label=f"seed {seed}")
    for ax, col in zip(axes, ("behavioral", "val_loss")):
        ax.set_xlabel("epoch (-1: before training)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel(MEASURES[col])
        ax.grid(alpha=0.3)
        ax.legend(title="baseline")
    axes[0].set_title("Behavioural alignment over training")
    axes[1].set_title("Validation loss over training")
    _save(fig, path)
    return None


def deviations(frame: pd.DataFrame) -> pd.DataFrame:
    """Per perturbed trial: change vs its baseline at the last shared epoch, and of max/min over training."""
    by = {tid: rows.set_index("epoch") for tid, rows in frame.groupby("trial_id")}
    out = []
    for tid, rows in by.items():
        first = rows.iloc[0]
        if first["perturb_type"] == "none" or first["baseline_id"] not in by:
            continue
        base = by[first["baseline_id"]]
        shared = sorted(set(rows.index) & set(base.index))
        if not shared:
            continue
        last = shared[-1]
        record = {"trial_id": tid, "perturb_type": first["perturb_type"], "perturb_epoch": first["perturb_epoch"],
                  "perturb_length": first["perturb_length"], "random_seed": first["random_seed"], "epoch": last}
        for col in MEASURES:
            record[f"delta_{col}"] = rows.at[last, col] - base.at[last, col]
        record["max_alignment_dev"] = rows.loc[shared, "behavioral"].max() - base.loc[shared, "behavioral"].max()
        record["min_loss_dev"] = rows.loc[shared, "val_loss"].min() - base.loc[shared, "val_loss"].min()
        out.append(record)
    return pd.DataFrame(out)


def single_epoch_effects(dev: pd.DataFrame, path: Path) -> str | None:
    single = dev[dev["perturb_length"] == 1] if len(dev) else dev
    if single.empty:
        return _placeholder(path, "Single-epoch perturbations vs baseline",
                            "no single-epoch perturbed trials with a baseline in this study")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ptype, rows in single.groupby("perturb_type"):
        for ax, col in zip(axes, MEASURES):
            stats = rows.groupby("perturb_epoch")[f"delta_{col}"].agg(["mean", "min", "max"]).dropna()
            if stats.empty:
                continue
            line = ax.plot(stats.index, stats["mean"], marker="o", label=ptype)[0]
            ax.fill_between(stats.index, stats["min"], stats["max"], alpha=0.2, color=line.get_color())
            ax.scatter(rows["perturb_epoch"], rows[f"delta_{col}"], s=12, color=line.get_color(), alpha=0.6)
    for ax, col in zip(axes, MEASURES):
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xlabel("perturbed epoch")
        ax.set_title(MEASURES[col])
        ax.set_ylabel("trial - baseline")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(title="perturbation (mean; band: seed range)", fontsize=8)
    fig.suptitle("Single-epoch perturbations: change vs baseline at the last epoch")
    _save(fig, path)
    return None


def heatmap(dev: pd.DataFrame, column: str, title: str, path: Path) -> str | None:
    rows = dev.dropna(subset=[column]) if len(dev) else dev
    if rows.empty:
        return _placeholder(path, title, "no perturbed trials with a baseline in this study")
    types = sorted(rows["perturb_type"].unique())
    fig, axes = plt.subplots(1, len(types), figsize=(5 * len(types), 4), squeeze=False)
    for ax, ptype in zip(axes[0], types):
        grid = rows[rows["perturb_type"] == ptype].pivot_table(index="perturb_length", columns="perturb_epoch",
                                                               values=column, aggfunc="mean")
        limit = float(np.nanmax(np.abs(grid.to_numpy()))) or 1.0
        image = ax.imshow(grid.to_numpy(), cmap="coolwarm", vmin=-limit, vmax=limit, origin="lower", aspect="auto")
        ax.set_xticks(range(len(grid.columns)), [str(c) for c in grid.columns])
        ax.set_yticks(range(len(grid.index)), [str(i) for i in grid.index])
        for (i, j), value in np.ndenumerate(grid.to_numpy()):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.3g}", ha="center", va="center", fontsize=8)
        ax.set_xlabel("start epoch")
        ax.set_ylabel("length (epochs)")
        ax.set_title(ptype)
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle(f"{title} (mean over seeds)")
    _save(fig, path)
    return None


def draw_all(results: pd.DataFrame, training: pd.DataFrame, out_dir: Path) -> tuple[list[Path], list[str]]:
    """Write every figure; returns (paths, notes on figures drawn without data)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = per_epoch(results, training)
    dev = deviations(frame) if len(frame) else pd.DataFrame()
    paths = [out_dir / name for name in FIGURES]
    notes = [baseline_curves(frame, paths[0]) if len(frame) else _placeholder(paths[0], "Baselines", "no data"),
             single_epoch_effects(dev, paths[1]),
             heatmap(dev, "max_alignment_dev", "Max behavioural alignment: trial - baseline", paths[2]),
             heatmap(dev, "min_loss_dev", "Min validation loss: trial - baseline", paths[3])]
    return paths, [n for n in notes if n]
