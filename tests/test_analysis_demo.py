"""Analyse the demo study (search_spaces/demo.py run on a small local Ray), as a researcher would."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import pytest
import ray

from analysis.analyze import analyze  # noqa: E402
from analysis.evaluate import Options  # noqa: E402
from hba_sweep.sweep.runner import RunOptions, run_study  # noqa: E402
from hba_sweep.sweep.spec import load_search_space  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
ROWS_PER_CHECKPOINT = 8  # things 1 + things_fmri 2 ROIs + nod 2 ROIs + nights 1 + cka 2
FIGURES = [
    "baseline_curves.png",
    "change_label_shuffle.png",
    "change_random_target.png",
    "ba_vs_loss.png",
    "na_vs_loss_things_fmri.png",
    "na_vs_loss_nod.png",
    "single_epoch_effects.png",
    "heatmap_max_alignment.png",
    "heatmap_min_val_loss.png",
]


def recompute_summary(training: pd.DataFrame) -> pd.DataFrame:
    """The published definitions, written again from training_metrics.parquet: own epochs (>= 0, not
    inherited, from the window start), truncated at the first minimum val loss; max/min vs the baseline's."""

    def best(rows: pd.DataFrame, start: int) -> tuple[float, float]:
        rows = rows[(rows["epoch"] >= max(start, 0)) & ~rows["inherited"]].sort_values("epoch").reset_index()
        rows = rows.iloc[: int(rows["val_loss"].to_numpy().argmin()) + 1]
        return rows["behavioral_rsa_rho"].max(), rows["val_loss"].min()

    out = []
    for tid, rows in training.groupby("trial_id"):
        first = rows.iloc[0]
        if first["is_baseline"]:
            continue
        align, loss = best(rows, int(first["perturb_epoch"]))
        b_align, b_loss = best(training[training["trial_id"] == first["baseline_id"]], 0)
        out.append(
            {"trial_id": tid, "max_alignment_deviation": align - b_align, "min_val_loss_deviation": loss - b_loss}
        )
    return pd.DataFrame(out).set_index("trial_id").sort_index()


def check_summary(out: Path) -> None:
    summary = pd.read_parquet(out / "summary.parquet").set_index("trial_id").sort_index()
    expected = recompute_summary(pd.read_parquet(out / "training_metrics.parquet"))
    assert list(summary.index) == list(expected.index)
    pd.testing.assert_frame_equal(summary[expected.columns], expected, check_exact=False, atol=1e-12)


@pytest.fixture(scope="module")
def demo_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo_study")
    saved = os.environ.get("HBA_DEMO_DATA")
    os.environ["HBA_DEMO_DATA"] = str(tmp / "demo")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        outcome = run_study(
            load_search_space(ROOT / "search_spaces" / "demo.py"), RunOptions(storage=str(tmp / "rr"), verbose=0)
        )
        assert outcome.exit_code == 0
        yield outcome.root
    finally:
        ray.shutdown()
        os.environ.pop("HBA_DEMO_DATA", None) if saved is None else os.environ.__setitem__("HBA_DEMO_DATA", saved)


def test_analyze_demo_study(demo_study: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from hba_sweep.model import CLIPHBA

    calls = []
    original = CLIPHBA.forward_from_prefix
    monkeypatch.setattr(CLIPHBA, "forward_from_prefix", lambda m, *a: calls.append(1) or original(m, *a))
    summary = analyze(demo_study, log=lambda m: None)  # evaluation sets declared by the study (EVALSETS)
    out = Path(demo_study) / "analysis"
    results = pd.read_parquet(out / "results.parquet")
    # 2 baselines + 8 forks, epochs -1..3 each; forks inherit the baseline's epochs before their window
    assert results["trial_id"].nunique() == 10
    assert set(results["epoch"]) == {-1, 0, 1, 2, 3}
    assert len(results) == 10 * 5 * ROWS_PER_CHECKPOINT
    assert not results.duplicated(["trial_id", "epoch", "dataset", "reference", "metric"]).any()
    forks = results[results["perturb_type"] != "none"]
    inherited = forks[forks["inherited"]]
    assert (inherited["epoch"] < inherited["perturb_epoch"]).all()
    assert len(inherited) == (4 * 2 + 4 * 3) * ROWS_PER_CHECKPOINT
    assert summary.computed == 2 * 5 + 4 * 3 + 4 * 2  # each distinct checkpoint once
    for name in FIGURES:
        assert (out / name).stat().st_size > 1000
    assert len(pd.read_parquet(out / "training_metrics.parquet")) == 50
    check_summary(out)
    report = (out / "report.md").read_text()
    windows = report.split("## Perturbation windows vs baseline")[1].split("\n## ")[0]
    assert windows.count("| label_shuffle |") == 2 and windows.count("| random_target |") == 2  # one row per window
    for ptype in ("label_shuffle", "random_target"):  # the answer, stated per type (2 windows, 2 seeds each)
        assert re.search(
            rf"\*\*{ptype}, Δ max alignment\*\*: (no window of 2 changes it|significant at q ≤ 0.05 for "
            r"start epoch)",
            report,
        )
    n = len(calls)
    assert analyze(demo_study, log=lambda m: None).computed == 0 and len(calls) == n


def test_analyze_demo_study_on_ray_tasks(demo_study: str, tmp_path: Path) -> None:
    """Work spread over Ray tasks gives the same table as the in-process path."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        spread = analyze(
            demo_study, Options(datasets=["things", "nights"], workers=2), str(tmp_path / "ray"), log=lambda m: None
        )
    finally:
        ray.shutdown()
    local = analyze(demo_study, Options(datasets=["things", "nights"]), str(tmp_path / "local"), log=lambda m: None)
    assert spread.computed == local.computed == 30
    cols = ["trial_id", "epoch", "dataset", "reference", "metric", "value"]
    pd.testing.assert_frame_equal(spread.results[cols], local.results[cols], check_exact=False, atol=1e-9)
