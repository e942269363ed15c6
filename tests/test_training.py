"""The training run: learning, exact resume, exact forks, cached == uncached, checkpoints."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch

from hba_sweep.artifacts import checkpoint as ckpt
from hba_sweep.config import run_dir
from hba_sweep.foundation.errors import CheckpointError, ConfigError
from hba_sweep.training import run_training_experiment

TIMING = {"epoch_seconds", "images_per_second"}


def rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as fh:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(fh)]


def by_epoch(run: Path) -> dict[int, dict]:
    return {int(r["epoch"]): r for r in rows(run)}


def adapters(run: Path, epoch: int) -> dict[str, torch.Tensor]:
    return ckpt.load_adapters(ckpt.epoch_dir(run, epoch))


def test_learning_lowers_loss_and_raises_behavioural_rsa(demo_config):
    cfg = demo_config(epochs=8)
    run_training_experiment(cfg)
    history = by_epoch(run_dir(cfg))
    assert sorted(history) == list(range(-1, 8))
    assert history[-1]["train_loss"] == ""  # the initial evaluation has no training loss
    assert float(history[7]["val_loss"]) < 0.5 * float(history[-1]["val_loss"])
    rho = {e: float(history[e]["behavioral_rsa_rho"]) for e in history}
    assert rho[7] > rho[-1] + 0.05, rho


def test_report_callback_gets_every_epoch_with_its_checkpoint(demo_config):
    seen = []
    cfg = demo_config(epochs=2)
    run_training_experiment(cfg, report=lambda metrics, path: seen.append((metrics["epoch"], path)))
    assert [e for e, _ in seen] == [-1, 0, 1]
    for epoch, path in seen:
        assert ckpt.verify_checkpoint(path)["epoch"] == epoch


def test_resume_matches_uninterrupted_run(demo_config, tmp_path):
    straight = demo_config(epochs=4, save_path=str(tmp_path / "a"))
    run_training_experiment(straight)
    first = demo_config(epochs=2, save_path=str(tmp_path / "b"))
    run_training_experiment(first)
    run_training_experiment(first.replace(epochs=4, resume_from=str(run_dir(first))))
    assert rows(run_dir(straight)) == rows(run_dir(first))
    for name, value in adapters(run_dir(straight), 3).items():
        assert torch.equal(value, adapters(run_dir(first), 3)[name])


def test_resume_from_an_earlier_epoch(demo_config, tmp_path):
    cfg = demo_config(epochs=3)
    run_training_experiment(cfg)
    expected = rows(run_dir(cfg))
    run_training_experiment(cfg.replace(resume_from=str(ckpt.epoch_dir(run_dir(cfg), 0))))
    assert rows(run_dir(cfg)) == expected


def test_fork_without_perturbation_reproduces_baseline(demo_config, tmp_path):
    base = demo_config(epochs=4, save_path=str(tmp_path / "base"))
    run_training_experiment(base)
    fork = demo_config(epochs=4, save_path=str(tmp_path / "fork"), init_from=str(run_dir(base)), init_epoch=1)
    run_training_experiment(fork)
    b, f = by_epoch(run_dir(base)), by_epoch(run_dir(fork))
    assert [f[e]["inherited"] for e in (-1, 0, 1)] == ["True"] * 3
    assert [f[e]["inherited"] for e in (2, 3)] == ["False"] * 2
    for e in (2, 3):
        assert {k: v for k, v in f[e].items() if k != "inherited"} == {
            k: v for k, v in b[e].items() if k != "inherited"
        }
    assert not ckpt.list_epochs(run_dir(fork))[0] < 2  # epochs before the window were not recomputed


def test_label_shuffle_fork_differs_from_its_window_on(demo_config, tmp_path):
    base = demo_config(epochs=4, save_path=str(tmp_path / "base"))
    run_training_experiment(base)
    fork = demo_config(
        epochs=4,
        save_path=str(tmp_path / "fork"),
        init_from=str(run_dir(base)),
        init_epoch=1,
        perturb_type="label_shuffle",
        perturb_epoch=2,
        perturb_length=1,
    )
    run_training_experiment(fork)
    b, f = by_epoch(run_dir(base)), by_epoch(run_dir(fork))
    assert f[1]["val_loss"] == b[1]["val_loss"]
    assert f[2]["perturbation_active"] == "True" and f[3]["perturbation_active"] == "False"
    for e in (2, 3):
        assert f[e]["train_loss"] != b[e]["train_loss"] and f[e]["val_loss"] != b[e]["val_loss"]


def test_fork_refuses_changed_model_settings(demo_config, tmp_path):
    base = demo_config(epochs=2, save_path=str(tmp_path / "base"))
    run_training_experiment(base)
    fork = demo_config(epochs=2, save_path=str(tmp_path / "fork"), init_from=str(run_dir(base)), init_epoch=0, rank=8)
    with pytest.raises(ConfigError, match="rank"):
        run_training_experiment(fork)


@pytest.mark.parametrize(
    "perturb_type,adapter",
    [
        (p, "hba_dora")
        for p in ("none", "random_target", "label_shuffle", "image_noise", "uniform_images", "blank_target")
    ]
    + [("none", "peft_dora"), ("image_noise", "peft_dora")],
)
def test_cached_prefix_equals_uncached_path(demo_config, tmp_path, perturb_type, adapter):
    settings = dict(
        epochs=3, perturb_type=perturb_type, perturb_epoch=1, perturb_length=1, dora_dropout=0.0, adapter=adapter
    )
    cached = demo_config(save_path=str(tmp_path / "cached"), **settings)
    plain = demo_config(save_path=str(tmp_path / "plain"), cache_frozen_prefix=False, **settings)
    run_training_experiment(cached)
    run_training_experiment(plain)
    assert list((tmp_path / "cached" / "prefix_cache").glob("*.npy"))
    assert not (tmp_path / "plain" / "prefix_cache").exists()
    a, b = by_epoch(run_dir(cached)), by_epoch(run_dir(plain))
    for e in a:
        for key in ("train_loss", "val_loss"):
            if a[e][key]:
                assert float(a[e][key]) == pytest.approx(float(b[e][key]), rel=1e-5), (e, key)
        for key in ("behavioral_rsa_rho", "target_rsa_rho"):  # ranks of 1128 distances: near-ties may swap
            assert float(a[e][key]) == pytest.approx(float(b[e][key]), abs=1e-4), (e, key)
    for name, value in adapters(run_dir(cached), 2).items():
        torch.testing.assert_close(value, adapters(run_dir(plain), 2)[name], rtol=1e-5, atol=1e-5)


def test_existing_run_needs_resume(demo_config):
    cfg = demo_config(epochs=1)
    run_training_experiment(cfg)
    with pytest.raises(ConfigError, match="--resume"):
        run_training_experiment(cfg)


def test_corrupted_checkpoint_is_named_not_loaded(demo_config):
    cfg = demo_config(epochs=2)
    run_training_experiment(cfg)
    target = ckpt.epoch_dir(run_dir(cfg), 1) / ckpt.ADAPTER_FILE
    target.write_bytes(target.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=str(target)):
        run_training_experiment(cfg.replace(resume_from=str(run_dir(cfg))))
    shutil.rmtree(ckpt.epoch_dir(run_dir(cfg), 1))  # the documented fix: resume from the previous epoch
    summary = run_training_experiment(cfg.replace(resume_from=str(run_dir(cfg))))
    assert summary["epoch"] == 1


def test_full_disk_during_checkpoint_keeps_previous(demo_config, monkeypatch):
    cfg = demo_config(epochs=3)
    calls = {"n": 0}
    real = ckpt.save  # safetensors' serialiser of the adapters

    def failing_save(tensors, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # epoch 1's adapter write
            raise OSError(28, "No space left on device")
        return real(tensors, *args, **kwargs)

    monkeypatch.setattr(ckpt, "save", failing_save)
    with pytest.raises(OSError):
        run_training_experiment(cfg)
    assert ckpt.list_epochs(run_dir(cfg)) == [-1, 0]
    ckpt.verify_checkpoint(ckpt.epoch_dir(run_dir(cfg), 0))
    assert not [p for p in (run_dir(cfg) / "checkpoints").iterdir() if p.name.startswith(".")]


def test_bfloat16_prefix_cache_trains_close_to_float32(demo_config, tmp_path):
    """The compact cache GPUs use by default: half the memory, numbers close to fp32."""
    runs = {}
    for dtype in ("float32", "bfloat16"):
        cfg = demo_config(epochs=2, cache_dtype=dtype, save_path=str(tmp_path / dtype))
        run_training_experiment(cfg)
        runs[dtype] = by_epoch(run_dir(cfg))
    sizes = {d: sum(p.stat().st_size for p in (tmp_path / d / "prefix_cache").glob("*.npy")) for d in runs}
    assert sizes["bfloat16"] < 0.6 * sizes["float32"]
    for e in (0, 1):
        assert float(runs["bfloat16"][e]["val_loss"]) == pytest.approx(float(runs["float32"][e]["val_loss"]), rel=0.02)
