"""Every number the analysis reports, against independent few-line oracles written from the formulas:
behavioural and neural RSA per ROI, NIGHTS 2AFC (with ties), CKA biased and unbiased, the published
summary (own epochs, truncation, deviations), delta and its sign, seed bands (bootstrap bounds),
and what the figures draw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from analysis import definitions as d
from analysis import window_figures
from hba_sweep.data.evalsets import read_evalsets_yaml
from hba_sweep.data.rdm_io import load_rdm
from hba_sweep.training.scoring import ScoreSettings, build_evalset


def by_reference(rows: list[dict]) -> dict[tuple[str, str], float]:
    return {(r["reference"], r["metric"]): r["value"] for r in rows}


def upper(m: np.ndarray) -> np.ndarray:
    return m[np.triu_indices(len(m), 1)]


def cosine_rdm(x: np.ndarray) -> np.ndarray:
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    return 1 - u @ u.T


@pytest.fixture(scope="module")
def specs(demo_dir: Path) -> dict:
    return read_evalsets_yaml(demo_dir / "evalsets.yaml")


def predictions_for(es, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(len(es.paths), 66))


# ---- RSA -----------------------------------------------------------------------------------
def test_behavioural_rsa_is_one_minus_pearson(specs: dict) -> None:
    es = build_evalset("things", specs["things"], ScoreSettings())
    x = predictions_for(es)
    ref = load_rdm(specs["things"]["reference_rdms"]["behavior"])
    expected = scipy.stats.spearmanr(upper(1 - np.corrcoef(x)), upper(ref))[0]
    assert by_reference(es.score(x))[("behavior", "rsa_spearman")] == pytest.approx(expected, abs=1e-12)


def test_neural_rsa_per_roi_is_one_minus_cosine_of_concept_means(specs: dict) -> None:
    from hba_sweep.data.evalsets import load_things_fmri

    spec = specs["things_fmri"]
    es = build_evalset("things_fmri", spec, ScoreSettings())
    x = predictions_for(es, 1) + 0.5  # offset: cosine and Pearson distances differ
    concepts = load_things_fmri(spec["metadata_csv"], spec["img_dir"]).concepts
    means = pd.DataFrame(x).groupby(pd.Series(concepts), sort=False).mean().to_numpy()
    got = by_reference(es.score(x))
    assert {k[0] for k in got} == {"V1", "IT"}
    for roi, path in spec["reference_rdms"].items():
        ref = load_rdm(path)
        expected = scipy.stats.spearmanr(upper(cosine_rdm(means)), upper(ref))[0]
        pearson = scipy.stats.spearmanr(upper(1 - np.corrcoef(means)), upper(ref))[0]
        assert got[(roi, "rsa_spearman")] == pytest.approx(expected, abs=1e-12)
        assert abs(expected - pearson) > 1e-6  # the test tells the two distances apart
    # the set's own model_rdm_distance_metric wins over the default
    own = build_evalset("things_fmri", {**spec, "model_rdm_distance_metric": "pearson"}, ScoreSettings())
    ref = load_rdm(spec["reference_rdms"]["V1"])
    assert by_reference(own.score(x))[("V1", "rsa_spearman")] == pytest.approx(
        scipy.stats.spearmanr(upper(1 - np.corrcoef(means)), upper(ref))[0], abs=1e-12
    )


# ---- NIGHTS 2AFC ------------------------------------------------------------------------------
def test_nights_2afc_test_split_by_default_and_tie_counts_left(specs: dict) -> None:
    spec = {k: v for k, v in specs["nights"].items() if k != "split"}  # no split given: `test`, as published
    es = build_evalset("nights", spec, ScoreSettings())
    table = pd.read_csv(spec["data_csv"])
    table = table[(table["split"] == "test") & (table["left_vote"] != table["right_vote"])]
    index = {str(p): i for i, p in enumerate(es.paths)}
    root = Path(spec["img_dir"])
    x = predictions_for(es, 3)
    first = table.iloc[0]
    x[index[str(root / first["right_path"])]] = x[index[str(root / first["left_path"])]]  # a distance tie

    def dist(a, b):
        return 1 - a @ b / np.linalg.norm(a) / np.linalg.norm(b)

    hits = []
    for _, t in table.iterrows():
        r, lft, rgt = (x[index[str(root / t[c])]] for c in ("ref_path", "left_path", "right_path"))
        model_left = not dist(r, rgt) < dist(r, lft)  # published: prediction = d_right < d_left
        hits.append(model_left == (t["left_vote"] > t["right_vote"]))
    rows = es.score(x)
    assert rows[0]["reference"] == "test"
    assert rows[0]["value"] == pytest.approx(np.mean(hits), abs=1e-12)
    assert abs(np.mean(hits) - 0.5) > 0.1  # inverting the human choice gives 1 - this: a different number


# ---- CKA ------------------------------------------------------------------------------------
def u_centre(k: np.ndarray) -> np.ndarray:
    """Székely-Rizzo U-centring (diagonal zero): unbiased HSIC = <U(K), U(L)> / (n (n - 3))."""
    n = len(k)
    k = k.copy()
    np.fill_diagonal(k, 0)
    u = k - k.sum(0, keepdims=True) / (n - 2) - k.sum(1, keepdims=True) / (n - 2) + k.sum() / ((n - 1) * (n - 2))
    np.fill_diagonal(u, 0)
    return u


def test_cka_biased_and_unbiased(specs: dict) -> None:
    from hba_sweep.data.things import read_things_csv

    es = build_evalset("cka", specs["things"], ScoreSettings())
    _, y = read_things_csv(specs["things"]["annotations_file"])
    y = y.astype(np.float64)
    x = predictions_for(es, 3)
    xc, yc = x - x.mean(0), y - y.mean(0)
    biased = np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    ku, lu = u_centre(x @ x.T), u_centre(y @ y.T)
    unbiased = np.sum(ku * lu) / np.sqrt(np.sum(ku * ku) * np.sum(lu * lu))
    got = by_reference(es.score(x))
    assert got[("targets", "cka")] == pytest.approx(biased, abs=1e-10)
    assert got[("targets", "cka_unbiased")] == pytest.approx(unbiased, abs=1e-10)
    assert abs(biased - unbiased) > 1e-3  # swapping the two fails


# ---- the published summary ------------------------------------------------------------------
def toy_training() -> tuple[pd.DataFrame, pd.DataFrame]:
    """A baseline B (epochs -1..5) and a fork P (window 2, length 2) that inherited epochs -1..1."""
    base_loss = [9.0, 5.0, 4.0, 3.0, 3.5, 2.5]  # epoch -1..4; its minimum at epoch 4
    base_align = [0.9, 0.2, 0.3, 0.5, 0.8, 0.4]  # epoch -1 is the highest: never counted
    fork_loss = [9.0, 5.0, 4.0, 4.5, 3.2, 3.9]  # own epochs 2..4; minimum at epoch 3
    fork_align = [0.9, 0.2, 0.3, 0.1, 0.35, 0.7]  # 0.7 after the truncation epoch: not counted
    rows = []
    for tid, loss, align in (("B", base_loss, base_align), ("P", fork_loss, fork_align)):
        for i, e in enumerate(range(-1, 5)):
            rows.append(
                {
                    "trial_id": tid,
                    "epoch": e,
                    "val_loss": loss[i],
                    "alignment": align[i],
                    "inherited": tid == "P" and e < 2,
                }
            )
    trials = pd.DataFrame(
        [
            {
                "trial_id": "B",
                "baseline_id": None,
                "is_baseline": True,
                "perturb_type": "none",
                "perturb_epoch": pd.NA,
                "perturb_length": pd.NA,
                "random_seed": 1,
                "perturb_seed": pd.NA,
            },
            {
                "trial_id": "P",
                "baseline_id": "B",
                "is_baseline": False,
                "perturb_type": "label_shuffle",
                "perturb_epoch": 2,
                "perturb_length": 2,
                "random_seed": 1,
                "perturb_seed": 42,
            },
        ]
    )
    return pd.DataFrame(rows), trials


def test_summary_as_published() -> None:
    per_epoch, trials = toy_training()
    row = d.summary_table(per_epoch, trials, "min_val_loss").set_index("trial_id").loc["P"]
    # oracle: fork epochs 2,3 (truncated at min loss 3.2, epoch 3); baseline epochs 0..4 (min 2.5 at 4)
    assert row["truncation_epoch"] == 3 and row["baseline_truncation_epoch"] == 4
    assert row["max_alignment"] == pytest.approx(0.35) and row["max_alignment_epoch"] == 3
    assert row["baseline_max_alignment"] == pytest.approx(0.8)
    assert row["max_alignment_deviation"] == pytest.approx(0.35 - 0.8)
    assert row["min_val_loss"] == pytest.approx(3.2) and row["min_val_loss_epoch"] == 3
    assert row["baseline_min_val_loss"] == pytest.approx(2.5)
    assert row["min_val_loss_deviation"] == pytest.approx(3.2 - 2.5)
    untruncated = d.summary_table(per_epoch, trials, "none").set_index("trial_id").loc["P"]
    assert untruncated["max_alignment"] == pytest.approx(0.7) and untruncated["truncation_epoch"] == 4


def test_summary_robust_to_a_diverged_run() -> None:
    per_epoch, trials = toy_training()
    per_epoch.loc[(per_epoch["trial_id"] == "P") & (per_epoch["epoch"] >= 3), ["val_loss", "alignment"]] = np.nan
    row = d.summary_table(per_epoch, trials).set_index("trial_id").loc["P"]
    assert row["truncation_epoch"] == 2 and row["min_val_loss"] == pytest.approx(4.5)
    assert row["max_alignment"] == pytest.approx(0.1)
    per_epoch.loc[per_epoch["trial_id"] == "P", "val_loss"] = np.inf
    assert np.isnan(d.summary_table(per_epoch, trials).set_index("trial_id").loc["P", "min_val_loss"])


def test_delta_is_value_minus_baseline_at_the_same_epoch() -> None:
    frame = pd.DataFrame(
        {
            "trial_id": ["B", "B", "P", "P", "Q"],
            "baseline_id": [None, None, "B", "B", "B"],
            "epoch": [0, 1, 0, 1, 2],
            "value": [0.5, 0.6, 0.5, 0.2, 0.9],
        }
    )
    out = d.add_baseline_delta(frame, ["epoch"]).set_index(["trial_id", "epoch"])
    assert out.loc[("P", 1), "baseline_value"] == pytest.approx(0.6)
    assert out.loc[("P", 1), "delta"] == pytest.approx(0.2 - 0.6)  # negative: the perturbation lowered it
    assert out.loc[("P", 0), "delta"] == 0
    assert np.isnan(out.loc[("B", 0), "delta"]) and np.isnan(out.loc[("Q", 2), "delta"])  # no baseline value


def test_seed_band_range_and_bootstrap_bounds() -> None:
    values = [0.1, 0.4, 0.3, 0.9]
    assert d.seed_band(values) == pytest.approx((0.425, 0.1, 0.9))
    rng = np.random.default_rng(7)
    means = [np.mean([values[i] for i in rng.integers(0, 4, size=4)]) for _ in range(200)]
    expected = (np.mean(values), np.quantile(means, 0.025), np.quantile(means, 0.975))
    assert d.seed_band(values, n_boot=200, seed=7) == pytest.approx(expected, abs=1e-12)
    assert d.seed_band([np.nan, 0.2]) == pytest.approx((0.2, 0.2, 0.2))


def test_best_trial_under_metric_and_mode() -> None:
    frame = pd.DataFrame(
        {
            "trial_id": ["a", "a", "b", "b"],
            "epoch": [-1, 0, 0, 1],
            "inherited": False,
            "val_loss": [0.1, 3.0, 2.0, np.nan],
        }
    )
    best = d.best_trial(frame, "val_loss", "min", {"b": {"lr": 0.01}})
    assert (best["trial_id"], best["epoch"], best["value"], best["config"]) == ("b", 0, 2.0, {"lr": 0.01})
    assert d.best_trial(frame, "val_loss", "max")["trial_id"] == "a"


# ---- what the figures draw -------------------------------------------------------------------
def test_heatmap_draws_seed_means_on_one_symmetric_scale() -> None:
    summary = pd.DataFrame(
        {
            "perturb_type": ["a", "a", "a", "b"],
            "perturb_epoch": [1, 1, 2, 1],
            "perturb_length": [1, 1, 2, 1],
            "max_alignment_deviation": [-0.2, -0.4, 0.1, 0.05],
        }
    )
    fig = window_figures.heatmap_figure(summary, "max_alignment_deviation", "Δ max")
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 2
    a = np.ma.filled(images[0].get_array(), np.nan)  # rows: lengths 1, 2; columns: start epochs 1, 2
    np.testing.assert_allclose(a, [[-0.3, np.nan], [np.nan, 0.1]])
    assert all(im.get_clim() == pytest.approx((-0.3, 0.3)) for im in images)  # shared, symmetric
    texts = {t.get_text(): t.get_color() for ax in fig.axes for t in ax.texts}
    assert texts["-0.3"] == "white" and texts["+0.1"] == "black"
    assert any(ax.get_ylabel().startswith("Δ max") for ax in fig.axes)  # the colourbar is labelled


def test_change_figure_draws_the_seed_mean_and_breaks_over_missing_epochs() -> None:
    deltas = pd.DataFrame(
        {
            "trial_id": ["p1", "p1", "p1", "p2", "p2"],
            "epoch": [1, 2, 4, 1, 2],
            "perturb_type": "t",
            "perturb_epoch": 1,
            "perturb_length": 1,
            "random_seed": [1, 1, 1, 2, 2],
            "alignment": [0.0, -0.2, -0.1, 0.0, -0.4],
            "val_loss": [0.0, 1.0, 0.5, 0.0, 3.0],
        }
    )
    fig = window_figures.change_figure(deltas, "t")
    align_ax, loss_ax = fig.axes[0], fig.axes[1]
    line = align_ax.lines[-1]
    np.testing.assert_allclose(line.get_xdata(), [1, 2, 3, 4])
    np.testing.assert_allclose(line.get_ydata(), [0.0, -0.3, np.nan, -0.1])  # no line across epoch 3
    np.testing.assert_allclose(loss_ax.lines[-1].get_ydata(), [0.0, 2.0, np.nan, 0.5])
    band = align_ax.collections[-1].get_paths()[0].vertices
    half = scipy.stats.t.ppf(0.975, 1) * np.std([-0.2, -0.4], ddof=1) / np.sqrt(2)  # 95% t interval over 2 seeds
    assert band[:, 1].min() == pytest.approx(-0.3 - half) and band[:, 1].max() == pytest.approx(-0.3 + half)


def test_a_window_that_did_not_complete_is_no_finished_perturbed_trial() -> None:
    per_epoch, trials = toy_training()
    per_epoch = per_epoch[~((per_epoch["trial_id"] == "P") & (per_epoch["epoch"] >= 3))]  # stopped inside 2..3
    row = d.summary_table(per_epoch, trials).set_index("trial_id").loc["P"]
    assert row["last_epoch"] == 2 and not row["window_completed"]
    assert d.summary_table(toy_training()[0], trials).set_index("trial_id").loc["P", "window_completed"]
    from analysis.report import window_section

    table = d.summary_table(per_epoch, trials).assign(trial_label="P")
    assert "No perturbed trial" in window_section(table)[0]
    with pytest.raises(window_figures.NoData):
        window_figures.heatmap_figure(table, "max_alignment_deviation", "Δ max")
