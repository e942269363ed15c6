"""Perturbation strategies against the DESIGN.md formulas, written out independently here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hba_sweep import perturbations as P
from hba_sweep.foundation.errors import ConfigError

SEED = 17
START, LENGTH = 2, 3  # window: epochs 2, 3, 4
MEAN, STD = 3.25, 1.75
WINDOW = [2, 3, 4]
BATCHES = [0, 1, 7]
ALL_TYPES = ["none", "random_target", "label_shuffle", "image_noise", "uniform_images", "blank_target"]


def make_batch(batch_size: int = 8, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, 4, 4, generator=g).to(dtype)
    targets = (torch.rand(batch_size, 66, generator=g) * 100).to(dtype)
    return images, targets


def strategy(kind: str, fraction: float = 1.0):
    return P.choose_perturbation_strategy(
        kind, START, LENGTH, SEED, target_mean=MEAN, target_std=STD, perturb_fraction=fraction
    )


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- the published formulas, spelled out ------------------------------------------------
def expected(kind: str, images, targets, epoch: int, batch: int):
    if kind == "random_target":
        g = gen(SEED + (epoch + 1) * 1000 + batch)
        return images, torch.randn(targets.shape, generator=g) * STD + MEAN
    if kind == "label_shuffle":
        g = gen(SEED + (START + 1) * 1000 + batch)
        return images, targets[torch.randperm(targets.shape[0], generator=g)]
    if kind == "image_noise":
        g = gen(SEED + (START + 1) * 1000 + batch)
        return torch.randn(images.shape, generator=g), targets
    if kind == "uniform_images":
        return torch.full_like(images, 0.5), targets
    if kind == "blank_target":
        return images, torch.zeros_like(targets)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["random_target", "label_shuffle", "image_noise", "uniform_images", "blank_target"])
@pytest.mark.parametrize("batch_size", [8, 5])
def test_matches_design_formula(kind, batch_size):
    s = strategy(kind)
    for epoch in WINDOW:
        for batch in BATCHES:
            images, targets = make_batch(batch_size, seed=epoch * 100 + batch)
            img0, tgt0 = images.clone(), targets.clone()
            out_img, out_tgt = s.apply_to_batch(images, targets, "cpu", epoch, batch)
            exp_img, exp_tgt = expected(kind, images, targets, epoch, batch)
            assert torch.equal(out_img, exp_img)
            assert torch.equal(out_tgt, exp_tgt)
            assert out_img.dtype == images.dtype and out_tgt.dtype == targets.dtype
            # inputs are never modified in place
            assert torch.equal(images, img0) and torch.equal(targets, tgt0)


@pytest.mark.parametrize("kind", ALL_TYPES)
def test_inactive_epochs_return_inputs_untouched(kind):
    s = strategy(kind)
    images, targets = make_batch()
    for epoch in [-1, 0, 1, START + LENGTH, START + LENGTH + 3]:
        out_img, out_tgt = s.apply_to_batch(images, targets, torch.device("cpu"), epoch, 0)
        assert out_img is images and out_tgt is targets
        assert s.selected_rows(8, epoch, 0).numel() == 0


def test_window_bounds():
    s = strategy("label_shuffle")
    assert [e for e in range(-1, 10) if s.is_active_epoch(e)] == WINDOW
    assert not any(strategy("none").is_active_epoch(e) for e in range(-1, 10))
    zero = P.choose_perturbation_strategy("image_noise", 3, 0, SEED)
    assert not any(zero.is_active_epoch(e) for e in range(10))


def test_none_returns_inputs_in_window():
    images, targets = make_batch()
    out = strategy("none").apply_to_batch(images, targets, "cpu", START, 0)
    assert out[0] is images and out[1] is targets


def test_label_shuffle_same_permutation_across_window():
    s = strategy("label_shuffle")
    targets = torch.arange(16, dtype=torch.float32).reshape(16, 1).expand(16, 66).contiguous()
    perms = [s.apply_to_batch(None, targets, "cpu", e, 3)[1][:, 0] for e in WINDOW]
    assert all(torch.equal(perms[0], p) for p in perms[1:])
    assert not torch.equal(perms[0], targets[:, 0])
    # batches differ
    other = s.apply_to_batch(None, targets, "cpu", START, 4)[1][:, 0]
    assert not torch.equal(perms[0], other)


def test_image_noise_same_noise_across_window():
    s = strategy("image_noise")
    images, targets = make_batch()
    draws = [s.apply_to_batch(images, targets, "cpu", e, 1)[0] for e in WINDOW]
    assert all(torch.equal(draws[0], d) for d in draws[1:])


def test_random_target_differs_across_epochs_and_batches():
    s = strategy("random_target")
    images, targets = make_batch()
    by_epoch = [s.apply_to_batch(images, targets, "cpu", e, 0)[1] for e in WINDOW]
    assert not torch.equal(by_epoch[0], by_epoch[1])
    assert not torch.equal(by_epoch[1], by_epoch[2])
    assert not torch.equal(by_epoch[0], s.apply_to_batch(images, targets, "cpu", START, 1)[1])
    # statistics follow mean/std
    big = s.apply_to_batch(None, torch.zeros(4096, 66), "cpu", START, 0)[1]
    assert abs(big.mean().item() - MEAN) < 0.02 and abs(big.std().item() - STD) < 0.02


def test_random_target_needs_mean_and_std():
    with pytest.raises(ValueError, match="target_mean"):
        P.choose_perturbation_strategy("random_target", 0, 1, SEED)
    with pytest.raises(ValueError, match="scalar"):
        P.choose_perturbation_strategy("random_target", 0, 1, SEED, torch.ones(66), torch.ones(66))


def test_random_target_accepts_tensor_stats_like_the_study():
    s = P.choose_perturbation_strategy(
        "random_target", 0, 1, SEED, torch.tensor(MEAN, dtype=torch.float32), torch.tensor(STD)
    )
    images, targets = make_batch()
    g = gen(SEED + 1000 + 2)
    assert torch.equal(
        s.apply_to_batch(images, targets, "cpu", 0, 2)[1], torch.randn(targets.shape, generator=g) * STD + MEAN
    )


def test_target_stats_matches_numpy_population_std():
    values = np.random.default_rng(0).random((40, 66)).astype(np.float32) * 50
    mean, std = P.target_stats(torch.from_numpy(values))
    assert mean == float(np.mean(values)) and std == float(np.std(values))


def test_changes_images_flags():
    flags = {k: type(strategy(k)).changes_images for k in ALL_TYPES}
    assert flags == {
        "none": False,
        "random_target": False,
        "label_shuffle": False,
        "image_noise": True,
        "uniform_images": True,
        "blank_target": False,
    }


def test_class_names_kept():
    assert isinstance(strategy("none"), P.NoPerturbation)
    assert isinstance(strategy("random_target"), P.TargetNoisePerturbation)
    assert isinstance(strategy("label_shuffle"), P.LabelShufflePerturbation)
    assert isinstance(strategy("image_noise"), P.ImageNoisePerturbation)
    assert isinstance(strategy("uniform_images"), P.UniformImagePerturbation)
    assert isinstance(strategy("blank_target"), P.BlankTargetPerturbation)
    assert isinstance(P.choose_perturbation_strategy("Label_Shuffle", 0, 1, 0), P.LabelShufflePerturbation)
    assert isinstance(P.choose_perturbation_strategy(None, 0, 1, 0), P.NoPerturbation)


@pytest.mark.parametrize("kind", ["random_target", "image_noise"])
def test_dtype_kept(kind):
    images, targets = make_batch(dtype=torch.float64)
    out_img, out_tgt = strategy(kind).apply_to_batch(images, targets, "cpu", START, 0)
    assert out_img.dtype == torch.float64 and out_tgt.dtype == torch.float64


# -- perturb_fraction ---------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["random_target", "label_shuffle", "image_noise", "uniform_images", "blank_target"])
@pytest.mark.parametrize("fraction", [1.0, 0.95])  # 0.95 * 10 rounds up to the whole batch
def test_fraction_covering_the_batch_equals_unfractioned_rule(kind, fraction):
    s = strategy(kind, fraction)
    for epoch in WINDOW:
        for batch in BATCHES:
            images, targets = make_batch(10, seed=batch)
            out = s.apply_to_batch(images, targets, "cpu", epoch, batch)
            exp = expected(kind, images, targets, epoch, batch)
            assert torch.equal(out[0], exp[0]) and torch.equal(out[1], exp[1])


def expected_rows(kind: str, batch_size: int, k: int, epoch: int, batch: int) -> torch.Tensor:
    """Documented subset rule: separate generator, the type's seed + 500_000."""
    e = START if kind in ("label_shuffle", "image_noise") else epoch
    g_sel = gen(SEED + (e + 1) * 1000 + batch + 500_000)
    return torch.sort(torch.randperm(batch_size, generator=g_sel)[:k]).values


@pytest.mark.parametrize("kind", ["random_target", "image_noise", "uniform_images", "blank_target"])
@pytest.mark.parametrize("batch_size", [8, 7])
def test_fraction_half_replaces_exactly_ceil_half_rows(kind, batch_size):
    s = strategy(kind, 0.5)
    k = math.ceil(batch_size / 2)
    for epoch in WINDOW:
        for batch in BATCHES:
            images, targets = make_batch(batch_size, seed=batch + 10 * epoch)
            img0, tgt0 = images.clone(), targets.clone()
            out_img, out_tgt = s.apply_to_batch(images, targets, "cpu", epoch, batch)
            full_img, full_tgt = expected(kind, images, targets, epoch, batch)
            changed_field, original, full = (
                (out_img, images, full_img) if type(s).changes_images else (out_tgt, targets, full_tgt)
            )
            changed = (changed_field != original).flatten(1).any(dim=1)
            rows = torch.nonzero(changed).flatten()
            assert rows.numel() == k
            assert torch.equal(rows, expected_rows(kind, batch_size, k, epoch, batch))
            assert torch.equal(rows, s.selected_rows(batch_size, epoch, batch))
            assert torch.equal(changed_field[rows], full[rows])
            assert torch.equal(changed_field[~changed], original[~changed])
            # the untouched field is returned as is
            untouched = out_tgt if type(s).changes_images else out_img
            assert untouched is (targets if type(s).changes_images else images)
            assert torch.equal(images, img0) and torch.equal(targets, tgt0)


@pytest.mark.parametrize("batch_size", [8, 9])
def test_fraction_half_label_shuffle_permutes_selected_rows_only(batch_size):
    s = strategy("label_shuffle", 0.5)
    k = math.ceil(batch_size / 2)
    targets = torch.arange(batch_size, dtype=torch.float32)[:, None].repeat(1, 66)
    for epoch in WINDOW:
        for batch in BATCHES:
            out = s.apply_to_batch(None, targets, "cpu", epoch, batch)[1]
            rows = expected_rows("label_shuffle", batch_size, k, epoch, batch)
            assert torch.equal(rows, s.selected_rows(batch_size, epoch, batch))
            others = torch.ones(batch_size, dtype=torch.bool)
            others[rows] = False
            assert torch.equal(out[others], targets[others])
            # documented rule: out[rows] = targets[rows[randperm(k, g)]], g the start-epoch seed
            perm = torch.randperm(k, generator=gen(SEED + (START + 1) * 1000 + batch))
            assert torch.equal(out[rows], targets[rows[perm]])
            assert sorted(out[rows, 0].tolist()) == sorted(targets[rows, 0].tolist())


def test_fraction_subset_differs_between_batches():
    s = strategy("blank_target", 0.25)
    subsets = {tuple(s.selected_rows(32, START, b).tolist()) for b in range(6)}
    assert len(subsets) > 1 and all(len(r) == 8 for r in subsets)


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5, float("nan")])
def test_fraction_out_of_range_is_config_error(bad):
    with pytest.raises(ConfigError, match="perturb_fraction"):
        strategy("blank_target", bad)


# -- registry -------------------------------------------------------------------------------
@pytest.fixture
def clean_registry(monkeypatch):
    monkeypatch.setattr(P.registry, "_REGISTRY", dict(P.registry._REGISTRY))


def test_registered_types_builtin():
    assert set(ALL_TYPES) <= P.registered_types()


def test_register_custom_type(clean_registry):
    @P.register("target_scale")
    class TargetScale(P.PerturbationStrategy):
        def replacement_targets(self, targets, epoch_idx, batch_idx):
            return targets * 2

    assert "target_scale" in P.registered_types()
    s = P.choose_perturbation_strategy("target_scale", 1, 1, SEED)
    assert isinstance(s, TargetScale)
    images, targets = make_batch()
    out_img, out_tgt = s.apply_to_batch(images, targets, "cpu", 1, 0)
    assert out_img is images and torch.equal(out_tgt, targets * 2)
    assert s.apply_to_batch(images, targets, "cpu", 2, 0)[1] is targets
    # re-registering the same class (a file imported twice) is fine; another class is not
    P.register("target_scale")(TargetScale)
    with pytest.raises(ConfigError, match="target_scale"):

        @P.register("target_scale")
        class Other(P.PerturbationStrategy):
            pass


def test_register_rejects_non_strategy(clean_registry):
    with pytest.raises(ConfigError):
        P.register("thing")(object)


def test_unknown_type_is_config_error_naming_it():
    with pytest.raises(ConfigError) as info:
        P.choose_perturbation_strategy("gaussian_blurr", 0, 1, 0)
    message = str(info.value)
    assert "gaussian_blurr" in message and "perturb_type" in message
    for name in ALL_TYPES:
        assert name in message
