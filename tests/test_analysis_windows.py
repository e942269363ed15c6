"""A generated study with two start epochs x two window lengths (a baseline and four forks, trained
directly, no Ray): summary.parquet equals the published definitions recomputed here from
training_metrics.parquet, the report has one row per window, the figures draw every window, and a
second analyze evaluates nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.analyze import analyze
from analysis.evaluate import Options

WINDOWS = [(1, 1), (1, 2), (2, 1), (2, 2)]


@pytest.fixture(scope="module")
def windows_study(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hba_sweep.config import load_config
    from hba_sweep.training import run_training_experiment

    root = tmp_path_factory.mktemp("windows") / "runs"
    cfg = load_config(demo_dir / "train.yaml", {"save_path": str(root), "epochs": 4, "progress": False})
    base = run_training_experiment(cfg)["run_dir"]
    for start, length in WINDOWS:
        run_training_experiment(
            cfg.replace(
                init_from=base,
                init_epoch=start - 1,
                perturb_type="random_target",
                perturb_epoch=start,
                perturb_length=length,
            )
        )
    return root


def recompute(training: pd.DataFrame) -> pd.DataFrame:
    """Own epochs (>= 0, not inherited, from the window start), cut after the first minimum val loss."""

    def best(rows: pd.DataFrame, start: int) -> tuple[float, float, int]:
        rows = rows[(rows["epoch"] >= start) & ~rows["inherited"]].sort_values("epoch")
        losses = rows["val_loss"].tolist()
        rows = rows.iloc[: losses.index(min(losses)) + 1]
        return rows["behavioral_rsa_rho"].max(), rows["val_loss"].min(), int(rows["epoch"].iloc[-1])

    out = []
    for tid, rows in training.groupby("trial_id"):
        first = rows.iloc[0]
        if first["is_baseline"]:
            continue
        align, loss, last = best(rows, int(first["perturb_epoch"]))
        b_align, b_loss, _ = best(training[training["trial_id"] == first["baseline_id"]], 0)
        out.append(
            {
                "trial_id": tid,
                "truncation_epoch": float(last),
                "max_alignment_deviation": align - b_align,
                "min_val_loss_deviation": loss - b_loss,
            }
        )
    return pd.DataFrame(out).set_index("trial_id").sort_index()


def test_two_starts_two_lengths(windows_study: Path, tmp_path: Path) -> None:
    out = tmp_path / "analysis"
    logs: list[str] = []
    first = analyze(str(windows_study), Options(datasets=["things"]), str(out), log=logs.append)
    # baseline epochs -1..3 (5) + forks' own epochs 1..3 (3) twice and 2..3 (2) twice; the first window epoch
    # of lengths 1 and 2 at one start is the same training step (same seeds): one checkpoint content, once
    assert first.computed == 5 + 3 + 3 + 2 + 2 - 2
    assert any(
        "13 of 25 (trial, epoch) checkpoints to evaluate: 10 are inherited" in m and "2 repeat another's adapters" in m
        for m in logs
    )
    assert any(m.startswith("[13/13]") for m in logs) and logs[-1].startswith("analyze took")
    summary = pd.read_parquet(out / "summary.parquet")
    assert sorted(zip(summary["perturb_epoch"], summary["perturb_length"], strict=False)) == WINDOWS
    expected = recompute(pd.read_parquet(out / "training_metrics.parquet"))
    got = summary.set_index("trial_id").sort_index()
    pd.testing.assert_frame_equal(got[expected.columns], expected, check_exact=False, atol=1e-12)
    assert np.isfinite(got["max_things/behavior/rsa_spearman_deviation"]).all()
    # results: delta against the baseline at the same epoch; baselines carry no perturbation settings
    results = pd.read_parquet(out / "results.parquet")
    base = results[results["is_baseline"]]
    assert base["perturb_epoch"].isna().all() and base["perturb_length"].isna().all() and base["delta"].isna().all()
    forks = results[~results["is_baseline"]]
    lookup = base.set_index("epoch")["value"]
    np.testing.assert_allclose(forks["delta"], forks["value"] - forks["epoch"].map(lookup).to_numpy())
    assert (forks.loc[forks["inherited"], "delta"] == 0).all()
    report = (out / "report.md").read_text()
    for start, length in WINDOWS:
        assert f"| random_target | {start} | {length} | 1 |" in report
    assert "## Definitions" in report and "minimum validation loss" in report
    assert analyze(str(windows_study), Options(datasets=["things"]), str(out), log=lambda m: None).computed == 0


def test_figures_draw_every_window(windows_study: Path, tmp_path: Path) -> None:
    from analysis import tables, window_figures
    from analysis.gather import gather, open_experiment

    study = gather(*open_experiment(str(windows_study)))
    training = tables.training_table(study)
    summary = tables.summary_table(
        pd.DataFrame(columns=["trial_id", "epoch", "dataset", "reference", "metric", "value"]), training
    )
    fig = window_figures.heatmap_figure(summary, "min_val_loss_deviation", "Δ min")
    grid = np.ma.filled(fig.axes[0].images[0].get_array(), np.nan)
    expected = summary.pivot_table(index="perturb_length", columns="perturb_epoch", values="min_val_loss_deviation")
    np.testing.assert_allclose(grid, expected.to_numpy())
    change = window_figures.change_figure(window_figures.epoch_deltas(training), "random_target")
    titles = sorted({ax.get_title() for ax in change.axes})
    assert titles == [f"start {s}, length {n}" for s, n in sorted(WINDOWS)]
    assert all(ax.patches for ax in change.axes)  # the window is shaded in every panel
