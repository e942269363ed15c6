"""The statistics of the critical-period analysis against oracles: the stimulus bootstrap against
rsatoolbox on the same resamples, BH against scipy, a planted effect found where it was planted
and nowhere else, the false-discovery share under the null, the paired bootstrap's sign and its
pairing by epoch, the one-seed fallback, --truncate baseline_only and the marked heatmap cells."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from analysis import bootstrap as b
from analysis import definitions as d
from analysis import statistics as st
from hba_sweep import rsa


def toy_rdms(n: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12))
    return x, rsa.compute_model_rdm(x), rsa.compute_model_rdm(x[:, :4] + rng.normal(size=(n, 4)))


# ---- the stimulus bootstrap ------------------------------------------------------------------
@pytest.mark.parametrize("ours, theirs", [("spearman", "spearman"), ("pearson", "corr"), ("kendall", "kendall")])
def test_stimulus_bootstrap_matches_rsatoolbox_on_the_same_resamples(ours: str, theirs: str) -> None:
    from rsatoolbox.inference import bootstrap_sample_pattern
    from rsatoolbox.rdm import RDMs, compare

    _, model, ref = toy_rdms()
    both = RDMs(np.stack([model, ref]), pattern_descriptors={"index": np.arange(len(model))})
    np.random.seed(5)  # rsatoolbox's sampler draws from numpy's global generator
    samples = [bootstrap_sample_pattern(both) for _ in range(25)]
    expected = [compare(rdms[0], rdms[1], method=theirs)[0, 0] for rdms, _ in samples]
    got = b.rdm_draws(model, ref, np.stack([idx for _, idx in samples]), ours)
    assert any(len(set(idx)) < len(idx) for _, idx in samples)  # repeated conditions: their pairs are dropped
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_stored_interval_is_the_published_bootstrap(demo_dir: Path) -> None:
    """The evaluation's RSA interval (vectorised draws) equals hba_sweep.rsa.bootstrap_rsa_ci's loop."""
    from analysis.evaluate import DIMENSION_METRIC, build_evaluations, evaluation_rows
    from hba_sweep.data.evalsets import read_evalsets_yaml
    from hba_sweep.data.rdm_io import load_rdm
    from hba_sweep.training.scoring import ScoreSettings

    specs = read_evalsets_yaml(demo_dir / "evalsets.yaml")
    (ev,) = build_evaluations(specs, ["things"], ScoreSettings(n_boot=40, seed=3))
    x = np.random.default_rng(1).normal(size=(len(ev.evalset.paths), 66))
    rows = evaluation_rows(ev, x)
    (row,) = [r for r in rows if r["metric"] == "rsa_spearman"]
    ref = load_rdm(specs["things"]["reference_rdms"]["behavior"])
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(rsa.bootstrap_rsa_ci(x, ref, n_boot=40, seed=3), abs=1e-12)
    assert len(row["boot"]) == 40
    dims = [r for r in rows if r["metric"] == DIMENSION_METRIC]
    assert len(dims) == 66 and dims[3]["value"] == pytest.approx(x[:, 3].mean())
    (other,) = build_evaluations(specs, ["things"], ScoreSettings(n_boot=40, seed=4))
    assert other.key != ev.key  # the draws are part of the cache key


# ---- the paired bootstrap of a change --------------------------------------------------------
def paired_results(shift: float = -0.1) -> tuple[pd.DataFrame, pd.Series]:
    """Baseline B at epochs 1, 2 (epoch 2 one unit higher) and a trial P at epoch 1 = B's epoch 1 + shift."""
    rng = np.random.default_rng(0)
    base1 = rng.normal(0.5, 0.05, size=300)
    noise = rng.normal(0, 0.01, size=300)
    rows = [("B", None, 1, base1), ("B", None, 2, base1 + 1.0), ("P", "B", 1, base1 + shift + noise)]
    frame = pd.DataFrame(
        [
            {
                "trial_id": t,
                "baseline_id": bid,
                "epoch": e,
                "dataset": "things",
                "reference": "behavior",
                "metric": "rsa_spearman",
            }
            for t, bid, e, _ in rows
        ]
    )
    return frame, pd.Series([r[3] for r in rows], dtype=object)


def test_paired_change_keeps_its_sign_and_pairs_by_epoch() -> None:
    frame, draws = paired_results(-0.1)
    row = b.add_delta_intervals(frame, draws).iloc[2]
    # same epoch: the interval is around -0.1 (the wrong sign would sit around +0.1, epoch 2's baseline at -1.1)
    assert -0.13 < row["delta_ci_low"] < -0.1 < row["delta_ci_high"] < -0.07
    assert row["delta_p"] == pytest.approx(2 / 301)  # every draw below 0: the smallest p of 300 draws
    assert b.add_delta_intervals(frame, draws)["delta_p"].iloc[:2].isna().all()  # baselines have no pair
    flat = b.paired_change(draws[0], draws[0])
    assert flat == (0.0, 0.0, 1.0)


def test_summary_draws_are_the_max_over_the_summarys_epochs() -> None:
    frame, draws = paired_results(-0.1)
    frame["inherited"] = False
    summary = pd.DataFrame(
        [
            {
                "trial_id": "P",
                "baseline_id": "B",
                "perturb_epoch": 1,
                "truncation_epoch": 1.0,
                "baseline_truncation_epoch": 2.0,
            }
        ]
    )
    got = b.summary_draws(summary, frame, draws)[("P", "max_things/behavior/rsa_spearman_deviation")]
    np.testing.assert_allclose(got, draws[2] - np.maximum(draws[0], draws[1]))
    summary["baseline_truncation_epoch"] = 1.0  # the baseline cut at epoch 1: only its epoch 1 counts
    got = b.summary_draws(summary, frame, draws)[("P", "max_things/behavior/rsa_spearman_deviation")]
    np.testing.assert_allclose(got, draws[2] - draws[0])


# ---- tests per window, BH --------------------------------------------------------------------
def test_bh_matches_scipy_and_keeps_nan() -> None:
    p = np.array([0.01, 0.04, np.nan, 0.03, 0.5, 0.002])
    q = st.bh_q(p)
    ok = np.isfinite(p)
    np.testing.assert_allclose(q[ok], scipy.stats.false_discovery_control(p[ok], method="bh"))
    assert np.isnan(q[2])


def test_seed_tests_t_and_exact_sign_flip() -> None:
    x = np.array([0.2, 0.1, 0.3, 0.25])
    out = st.window_test(x)
    assert out["p_t"] == pytest.approx(scipy.stats.ttest_1samp(x, 0).pvalue)
    assert out["p_sign_flip"] == pytest.approx(2 / 16) and out["exact"]  # all positive: 2 of 16 sign patterns
    half = scipy.stats.t.ppf(0.975, 3) * x.std(ddof=1) / 2
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((x.mean() - half, x.mean() + half))
    assert st.window_test(x, test="sign_flip")["p"] == out["p_sign_flip"]


def study_summary(rng: np.random.Generator, planted: float, seeds: int = 5) -> pd.DataFrame:
    """Two types x start epochs 0..4 x lengths 1..2, ``seeds`` trials each; windows starting at epoch 0
    lower alignment by ``planted``; every deviation has seed noise sd 0.01."""
    rows = []
    for ptype in ("label_shuffle", "random_target"):
        for start in range(5):
            for length in (1, 2):
                for seed in range(seeds):
                    effect = -planted if start == 0 else 0.0
                    rows.append(
                        {
                            "trial_id": f"{ptype}{start}{length}{seed}",
                            "perturb_type": ptype,
                            "perturb_epoch": start,
                            "perturb_length": length,
                            "random_seed": seed,
                            "window_completed": True,
                            "max_alignment_deviation": effect + rng.normal(0, 0.01),
                        }
                    )
    return pd.DataFrame(rows)


def test_a_planted_effect_is_found_there_and_nowhere_else() -> None:
    stats = st.window_statistics(study_summary(np.random.default_rng(11), planted=0.05))
    called = stats[stats["significant"]]
    assert set(zip(called["perturb_type"], called["perturb_epoch"], called["perturb_length"], strict=False)) == {
        (t, 0, n) for t in ("label_shuffle", "random_target") for n in (1, 2)
    }
    assert (called["mean"] < 0).all()
    sentence = st.answer(stats, "label_shuffle", "max_alignment_deviation")
    assert sentence.startswith("significant at q ≤ 0.05 for start epoch 0 (length 1, 2; lower than the baseline)")
    assert "start epoch 1" not in sentence


def test_under_the_null_the_share_called_significant_stays_below_q() -> None:
    rng = np.random.default_rng(2024)
    called = total = 0
    for _ in range(60):
        stats = st.window_statistics(study_summary(rng, planted=0.0))
        called += int(stats["significant"].sum())
        total += len(stats)
    assert total == 60 * 20
    assert called / total <= 0.05


def test_one_seed_falls_back_to_the_stimulus_bootstrap() -> None:
    summary = pd.DataFrame(
        [
            {
                "trial_id": "P",
                "perturb_type": "t",
                "perturb_epoch": 1,
                "perturb_length": 1,
                "window_completed": True,
                "max_alignment_deviation": -0.1,
                "max_things/behavior/rsa_spearman_deviation": -0.1,
            }
        ]
    )
    draws = np.random.default_rng(0).normal(-0.1, 0.02, size=200)
    stats = st.window_statistics(summary, {("P", "max_things/behavior/rsa_spearman_deviation"): draws})
    boot = stats.set_index("measure").loc["max_things/behavior/rsa_spearman_deviation"]
    assert boot["test"] == "bootstrap" and boot["p"] == pytest.approx(b.bootstrap_p(draws))
    assert (boot["ci_low"], boot["ci_high"]) == pytest.approx(b.percentile_ci(draws))
    none = stats.set_index("measure").loc["max_alignment_deviation"]  # no draws for the training-logged measure
    assert none["test"] == "none" and np.isnan(none["p"]) and not none["significant"]
    assert "paired stimulus bootstrap" in st.answer(stats, "t", "max_things/behavior/rsa_spearman_deviation")


def test_summary_gains_the_window_ci_p_and_q() -> None:
    summary = study_summary(np.random.default_rng(1), planted=0.05)
    stats = st.window_statistics(summary)
    out = st.with_window_statistics(summary, stats)
    row = out.iloc[0]
    window = stats[
        (stats["perturb_type"] == row["perturb_type"])
        & (stats["perturb_epoch"] == row["perturb_epoch"])
        & (stats["perturb_length"] == row["perturb_length"])
    ].iloc[0]
    assert row["max_alignment_deviation_q"] == window["q"] and row["max_alignment_deviation_ci_low"] == window["ci_low"]


# ---- truncation rules, figures, dimensions ---------------------------------------------------
def test_truncate_baseline_only_cuts_the_baseline_not_the_trial() -> None:
    from test_analysis_numbers import toy_training

    per_epoch, trials = toy_training()
    row = d.summary_table(per_epoch, trials, "baseline_only").set_index("trial_id").loc["P"]
    assert row["baseline_truncation_epoch"] == 4 and row["truncation_epoch"] == 4  # the fork: every own epoch
    assert row["max_alignment"] == pytest.approx(0.7) and row["baseline_max_alignment"] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="rule_for"):
        d.truncation_epoch(per_epoch, "baseline_only")


def test_heatmap_frames_the_significant_cells() -> None:
    from analysis import window_figures

    summary = study_summary(np.random.default_rng(3), planted=0.05)
    stats = st.window_statistics(summary)
    fig = window_figures.heatmap_figure(
        summary, "max_alignment_deviation", "Δ max", st.significant_cells(stats, "max_alignment_deviation")
    )
    starred = [t.get_text() for ax in fig.axes for t in ax.texts if t.get_text().endswith("*")]
    assert len(starred) == 4  # start 0, lengths 1 and 2, both types
    assert all(len(ax.patches) == 2 for ax in fig.axes if ax.images)


def test_dimensions_rank_the_change_at_the_windows_last_epoch() -> None:
    from analysis.dimensions import window_dimensions

    rows = []
    for seed, shift in ((1, 0.0), (2, 0.2)):
        for epoch in (2, 3):
            for dim, delta in (("black", -1.0), ("white", 0.5), ("green", 0.1)):
                rows.append(
                    {
                        "trial_id": f"p{seed}",
                        "perturb_type": "t",
                        "perturb_epoch": 2,
                        "perturb_length": 2,
                        "epoch": epoch,
                        "dimension": dim,
                        "delta": delta * (epoch - 1) + shift,
                    }
                )
    table = window_dimensions(pd.DataFrame(rows)).set_index("dimension")
    assert (table["epoch"] == 3).all()  # the window's last epoch
    assert table.loc["black", "mean_change"] == pytest.approx(-2.0 + 0.1) and table.loc["black", "rank"] == 1
    assert list(table.sort_values("rank").index) == ["black", "white", "green"]


def test_seeds_equal_up_to_rounding_count_as_no_variance():
    """Two seeds with the same deviation but for float rounding: no t-test on a rounding-error variance
    (scipy warns of catastrophic cancellation); the zero-variance rule applies, without a warning."""
    import warnings

    from analysis.statistics import window_test

    x = [-1 / 48, -1 / 48 * (1 + 2**-50)]
    assert x[0] != x[1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = window_test(x)
    assert out["p_t"] == 0.0 and out["p_sign_flip"] == 0.5  # the smallest sign-flip p of two seeds
