"""RSA, CKA and 2AFC against slow oracles, scipy and rsatoolbox."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.stats

from hba_sweep import rsa

REFERENCE_DATA = Path(__file__).resolve().parents[2] / "shared" / "reference-data"


def rand(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape)


# -- model RDMs -------------------------------------------------------------------------------
def loop_rdm(x: np.ndarray, metric: str) -> np.ndarray:
    n = x.shape[0]
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if metric == "pearson":
                out[i, j] = 1 - scipy.stats.pearsonr(x[i], x[j])[0]
            elif metric == "cosine":
                out[i, j] = 1 - x[i] @ x[j] / (np.linalg.norm(x[i]) * np.linalg.norm(x[j]))
            else:
                out[i, j] = np.sqrt(np.sum((x[i] - x[j]) ** 2))
    return out


@pytest.mark.parametrize("metric", ["pearson", "cosine", "euclidean"])
def test_model_rdm_matches_double_loop(metric):
    x = rand((12, 66), seed=1) + 3
    got = rsa.compute_model_rdm(x, metric)
    assert got.shape == (12, 12) and got.dtype == np.float64
    np.testing.assert_allclose(got, loop_rdm(x, metric), atol=1e-12)
    assert np.all(np.diag(got) == 0) and np.array_equal(got, got.T)


def test_upper_triangle_order():
    m = np.arange(16.0).reshape(4, 4)
    assert rsa.upper_triangle(m).tolist() == [1, 2, 3, 6, 7, 11]
    assert rsa.upper_triangle(m, k=0).tolist() == [0, 1, 2, 3, 5, 6, 7, 10, 11, 15]
    with pytest.raises(ValueError):
        rsa.upper_triangle(np.zeros((3, 4)))


# -- agreement with rsatoolbox ---------------------------------------------------------------
@pytest.fixture
def rsatoolbox():
    import rsatoolbox  # a test dependency: a broken install fails here instead of skipping

    return rsatoolbox


def toolbox_rdm(toolbox, x: np.ndarray, method: str) -> np.ndarray:
    data = toolbox.data.Dataset(x)
    return toolbox.rdm.calc_rdm(data, method=method).get_matrices()[0]


def test_pearson_rdm_equals_rsatoolbox_correlation(rsatoolbox):
    x = rand((20, 66), seed=2)
    np.testing.assert_allclose(
        rsa.compute_model_rdm(x, "pearson"), toolbox_rdm(rsatoolbox, x, "correlation"), atol=1e-12
    )


def test_euclidean_rdm_equals_rsatoolbox_after_its_scaling(rsatoolbox):
    # rsatoolbox's 'euclidean' is the squared distance divided by the number of channels
    x = rand((20, 66), seed=3)
    ours = rsa.compute_model_rdm(x, "euclidean")
    np.testing.assert_allclose(ours**2 / x.shape[1], toolbox_rdm(rsatoolbox, x, "euclidean"), rtol=1e-10, atol=1e-12)


# scipy statistic <-> rsatoolbox.rdm.compare method: spearmanr <-> 'spearman',
# pearsonr <-> 'corr', kendalltau (tau-b, scipy's default) <-> 'kendall'. ('tau-a'
# coincides only without ties, see test_kendall_is_tau_b_not_tau_a.)
TOOLBOX_METHOD = {"spearman": "spearman", "pearson": "corr", "kendall": "kendall"}


@pytest.mark.parametrize("similarity", ["spearman", "pearson", "kendall"])
@pytest.mark.parametrize("distance", ["pearson", "euclidean"])
def test_rsa_equals_rsatoolbox_compare(similarity, distance, rsatoolbox):
    x = rand((25, 30), seed=4)
    reference = rsa.compute_model_rdm(x + 0.8 * rand((25, 30), seed=5), "euclidean")
    rho, p = rsa.behavioral_rsa(x, reference, distance, similarity)
    if distance == "pearson":
        toolbox_model = toolbox_rdm(rsatoolbox, x, "correlation")
    else:  # undo rsatoolbox's squared-and-scaled Euclidean (matters for Pearson)
        toolbox_model = np.sqrt(np.maximum(toolbox_rdm(rsatoolbox, x, "euclidean"), 0) * x.shape[1])
    model = rsatoolbox.rdm.RDMs(toolbox_model[None])
    ref = rsatoolbox.rdm.RDMs(reference[None])
    expected = rsatoolbox.rdm.compare(model, ref, method=TOOLBOX_METHOD[similarity])[0, 0]
    assert rho == pytest.approx(expected, abs=1e-10)
    assert 0 <= p < 1e-3  # strongly related RDMs


def test_kendall_is_tau_b_not_tau_a(rsatoolbox):
    a = np.array([1, 1, 2, 3, 3, 3, 4, 5, 6, 6], dtype=float)
    b = np.array([2, 1, 2, 4, 3, 5, 5, 7, 6, 8], dtype=float)
    tau, _ = rsa.compute_rdm_similarity(a, b, "kendall")
    tau_b = rsatoolbox.rdm.compare(a[None], b[None], method="kendall")[0, 0]
    tau_a = rsatoolbox.rdm.compare(a[None], b[None], method="tau-a")[0, 0]
    assert tau == pytest.approx(tau_b, abs=1e-12)
    assert abs(tau - tau_a) > 1e-3


def test_pearson_p_value_from_t_distribution():
    a, b = rand(40, seed=6), rand(40, seed=7) + 0.3 * rand(40, seed=6)
    r, p = rsa.compute_rdm_similarity(a, b, "pearson")
    n = a.size
    t = r * np.sqrt((n - 2) / (1 - r**2))
    assert r == pytest.approx(np.corrcoef(a, b)[0, 1], abs=1e-12)
    assert p == pytest.approx(2 * scipy.stats.t.sf(abs(t), n - 2), rel=1e-8)


def test_spearman_is_pearson_of_ranks():
    a, b = rand(50, seed=8), rand(50, seed=9)
    rho, _ = rsa.compute_rdm_similarity(a, b, "spearman")
    assert rho == pytest.approx(np.corrcoef(scipy.stats.rankdata(a), scipy.stats.rankdata(b))[0, 1], abs=1e-12)


def test_behavioral_rsa_accepts_upper_triangle_reference():
    x, y = rand((10, 66), seed=10), rand((10, 66), seed=11)
    ref = rsa.compute_model_rdm(y)
    assert rsa.behavioral_rsa(x, ref) == rsa.behavioral_rsa(x, rsa.upper_triangle(ref))


# -- degenerate input --------------------------------------------------------------------------
def test_degenerate_inputs_raise():
    with pytest.raises(ValueError, match="at least 3"):
        rsa.compute_model_rdm(rand((2, 5)))
    const = rand((5, 4))
    const[2] = 7.0
    with pytest.raises(ValueError, match="constant rows \\[2\\]"):
        rsa.compute_model_rdm(const, "pearson")
    zero = rand((5, 4))
    zero[1] = 0
    with pytest.raises(ValueError, match="all-zero"):
        rsa.compute_model_rdm(zero, "cosine")
    with pytest.raises(ValueError, match="distance_metric"):
        rsa.compute_model_rdm(rand((5, 4)), "manhattan")
    with pytest.raises(ValueError, match="similarity_metric"):
        rsa.compute_rdm_similarity(rand(6), rand(6), "cosine")
    with pytest.raises(ValueError, match="constant"):
        rsa.compute_rdm_similarity(np.ones(6), rand(6))
    with pytest.raises(ValueError, match="differ in length"):
        rsa.compute_rdm_similarity(rand(6), rand(7))
    with pytest.raises(ValueError, match="NaN"):
        rsa.compute_model_rdm(np.full((4, 3), np.nan))
    with pytest.raises(ValueError, match="4x4"):
        rsa.behavioral_rsa(rand((4, 3)), np.zeros((5, 5)))


# -- bootstrap -----------------------------------------------------------------------------------
def slow_bootstrap(x, ref, n_boot, ci, seed):
    model = loop_rdm(x, "pearson")
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        a, b = [], []
        for i in range(n):
            for j in range(i + 1, n):
                if idx[i] != idx[j]:
                    a.append(model[idx[i], idx[j]])
                    b.append(ref[idx[i], idx[j]])
        stats.append(scipy.stats.spearmanr(a, b)[0])
    return tuple(np.quantile(stats, [(1 - ci) / 2, (1 + ci) / 2]))


def test_bootstrap_ci_matches_slow_oracle():
    x = rand((15, 20), seed=12)
    ref = rsa.compute_model_rdm(x + rand((15, 20), seed=13), "pearson")
    got = rsa.bootstrap_rsa_ci(x, ref, "pearson", "spearman", n_boot=50, ci=0.9, seed=3)
    np.testing.assert_allclose(got, slow_bootstrap(x, ref, 50, 0.9, 3), atol=1e-12)


def test_bootstrap_ci_brackets_estimate_and_is_seeded():
    x = rand((30, 20), seed=14)
    ref = rsa.compute_model_rdm(x + rand((30, 20), seed=15), "pearson")
    rho, _ = rsa.behavioral_rsa(x, ref)
    low, high = rsa.bootstrap_rsa_ci(x, ref, "pearson", "spearman", n_boot=300, seed=1)
    assert low < rho < high and high - low < 0.5
    assert rsa.bootstrap_rsa_ci(x, ref, "pearson", "spearman", n_boot=300, seed=1) == (low, high)
    assert rsa.bootstrap_rsa_ci(x, ref, "pearson", "spearman", n_boot=300, seed=2) != (low, high)


# -- CKA ----------------------------------------------------------------------------------------
def hsic_oracle(x, y):
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(x @ x.T @ h @ y @ y.T @ h) / (n - 1) ** 2


def unbiased_hsic_oracle(x, y):
    """U-statistic over ordered distinct 4-tuples: k_ij l_ij + k_ij l_qr - 2 k_ij l_iq."""
    k, l = x @ x.T, y @ y.T
    total, count = 0.0, 0
    for i, j, q, r in itertools.permutations(range(x.shape[0]), 4):
        total += k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q]
        count += 1
    return total / count


def test_cka_biased_equals_hsic_oracle():
    x, y = rand((20, 8), seed=16), rand((20, 5), seed=17)
    y[:, :3] += x[:, :3]
    expected = hsic_oracle(x, y) / np.sqrt(hsic_oracle(x, x) * hsic_oracle(y, y))
    assert rsa.compute_cka(x, y) == pytest.approx(expected, abs=1e-12)
    # feature-space form (Kornblith et al. 2019)
    xc, yc = x - x.mean(0), y - y.mean(0)
    feature_form = np.linalg.norm(xc.T @ yc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert rsa.compute_cka(x, y) == pytest.approx(feature_form, abs=1e-12)


def test_cka_unbiased_equals_explicit_loop():
    x, y = rand((7, 4), seed=18), rand((7, 3), seed=19)
    y[:, :2] += x[:, :2]
    expected = unbiased_hsic_oracle(x, y) / np.sqrt(unbiased_hsic_oracle(x, x) * unbiased_hsic_oracle(y, y))
    assert rsa.compute_cka(x, y, unbiased=True) == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("unbiased", [False, True])
def test_cka_invariances(unbiased):
    x, y = rand((30, 10), seed=20), rand((30, 6), seed=21)
    q = scipy.stats.ortho_group.rvs(10, random_state=0)
    assert rsa.compute_cka(x, x, unbiased) == pytest.approx(1.0, abs=1e-12)
    base = rsa.compute_cka(x, y, unbiased)
    assert rsa.compute_cka(x @ q, y, unbiased) == pytest.approx(base, abs=1e-10)
    assert rsa.compute_cka(3.7 * x, 0.2 * y, unbiased) == pytest.approx(base, abs=1e-10)
    assert rsa.compute_cka(x + 5.0, y, unbiased) == pytest.approx(base, abs=1e-9)


def test_cka_unbiased_near_zero_for_independent_wide_data():
    x, y = rand((200, 50), seed=22), rand((200, 50), seed=23)
    assert abs(rsa.compute_cka(x, y, unbiased=True)) < 0.05 < rsa.compute_cka(x, y)


def test_cka_degenerate():
    with pytest.raises(ValueError, match="same number of rows"):
        rsa.compute_cka(rand((5, 3)), rand((6, 3)))
    with pytest.raises(ValueError, match="CKA undefined"):
        rsa.compute_cka(np.ones((6, 3)), rand((6, 3)))
    with pytest.raises(ValueError, match="at least 4"):
        rsa.compute_cka(rand((3, 3)), rand((3, 3)), unbiased=True)


# -- 2AFC ---------------------------------------------------------------------------------------
def test_two_afc_hand_built():
    e1, e2 = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    near = np.array([0.9, 0.1])
    ref = np.array([e1, e1, e1, e2, e1])
    left = np.array([near, e2, near, e1, near])
    right = np.array([e2, near, e2, near, e2])
    # humans: left, right, right (model disagrees), right, tie (excluded)
    left_vote = np.array([5, 1, 2, 0, 3])
    right_vote = np.array([1, 4, 3, 6, 3])
    assert rsa.two_afc_accuracy(ref, left, right, left_vote, right_vote) == pytest.approx(0.75)


def test_two_afc_matches_loop_and_validates():
    ref, left, right = rand((40, 6), 24), rand((40, 6), 25), rand((40, 6), 26)
    lv, rv = np.random.default_rng(0).integers(0, 6, size=(2, 40))
    hits, total = 0, 0
    for t in range(40):
        if lv[t] == rv[t]:
            continue
        dl = scipy.spatial.distance.cosine(ref[t], left[t])
        dr = scipy.spatial.distance.cosine(ref[t], right[t])
        hits += (dl < dr) if lv[t] > rv[t] else (dr < dl)
        total += 1
    assert rsa.two_afc_accuracy(ref, left, right, lv, rv) == pytest.approx(hits / total)
    with pytest.raises(ValueError, match="tied votes"):
        rsa.two_afc_accuracy(ref, left, right, np.ones(40), np.ones(40))


# -- grouping ----------------------------------------------------------------------------------
def test_average_by_group():
    x = np.arange(12.0).reshape(6, 2)
    names, means = rsa.average_by_group(x, ["b", "a", "b", "c", "a", "b"])
    assert names == ["b", "a", "c"]
    np.testing.assert_allclose(means, [x[[0, 2, 5]].mean(0), x[[1, 4]].mean(0), x[3]])
    with pytest.raises(ValueError, match="entries"):
        rsa.average_by_group(x, ["a"])


# -- the published behavioural check -------------------------------------------------------------
@pytest.mark.skipif(
    not REFERENCE_DATA.is_dir(), reason=f"reference data not available at {REFERENCE_DATA} (../shared absent)"
)
def test_published_behavioural_check():
    import pandas as pd

    frame = pd.read_csv(REFERENCE_DATA / "spose_embedding66d_rescaled_48val_reordered.csv", index_col=0)
    targets = frame[[str(i) for i in range(66)]].to_numpy(dtype=np.float64)
    reference = scipy.io.loadmat(REFERENCE_DATA / "RDM48_triplet.mat")["RDM48_triplet"]
    assert targets.shape == (48, 66) and reference.shape == (48, 48)

    rho, p = rsa.behavioral_rsa(targets, reference, "pearson", "spearman")

    iu = np.triu_indices(48, k=1)
    model = 1.0 - np.corrcoef(targets)
    expected_rho, expected_p = scipy.stats.spearmanr(model[iu], reference[iu])
    assert rho == pytest.approx(expected_rho, abs=1e-12)
    assert p == pytest.approx(expected_p, rel=1e-6)
    assert rho > 0.5  # SPoSE embeddings predict the triplet RDM well
    print(f"published behavioural check: rho={rho:.6f} p={p:.3g}")


def test_two_afc_distance_tie_counts_as_left():
    """Published NIGHTS rule: the model picks right only when strictly closer (prediction = d1 < d0)."""
    ref = np.array([[1.0, 0.0]] * 4)
    side = np.array([[1.0, 1.0]] * 4)  # left and right identical: every distance ties
    human_left = np.array([1, 1, 0, 0])
    # oracle: model choice is "left" on every triplet, so it is right exactly where humans chose left
    assert rsa.two_afc_accuracy(ref, side, side, human_left, 1 - human_left) == pytest.approx(0.5)
    assert rsa.two_afc_accuracy(ref, side, side, np.ones(4), np.zeros(4)) == pytest.approx(1.0)
    assert rsa.two_afc_accuracy(ref, side, side, np.zeros(4), np.ones(4)) == pytest.approx(0.0)
