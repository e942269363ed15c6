"""A diverging run (a non-finite loss or prediction) stops with its reason, recorded, without a traceback.

The divergence is real: a perturbation scales the targets by 1e30 in epoch 1, so the fp32 MSE
overflows, the gradients become non-finite and so do the adapters and every later prediction.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import write_small_run_config

from hba_sweep import cli
from hba_sweep import perturbations as P
from hba_sweep.config import load_config
from hba_sweep.data.rdm_io import load_rdm
from hba_sweep.foundation.errors import DataError
from hba_sweep.training import run_training_experiment


@pytest.fixture
def exploding(monkeypatch):
    """Registers ``explode``: targets times 1e30 inside the perturbation window."""
    monkeypatch.setattr(P.registry, "_REGISTRY", dict(P.registry._REGISTRY))

    @P.register("explode")
    class Explode(P.PerturbationStrategy):
        def replacement_targets(self, targets, epoch_idx, batch_idx):
            return targets * 1e30

    return "explode"


def diverging_config(demo_dir: Path, tmp_path: Path, **changes) -> Path:
    config, base, _ = write_small_run_config(demo_dir, tmp_path, "diverging")
    base.update(epochs=4, perturb_type="explode", perturb_epoch=1, perturb_length=1, **changes)
    config.write_text(yaml.safe_dump(base))
    return config


@pytest.mark.parametrize("rsa", [True, False], ids=["rsa-on", "rsa-off"])
def test_diverging_run_stops_recorded_with_its_reason(demo_dir, tmp_path, exploding, rsa):
    cfg = load_config(diverging_config(demo_dir, tmp_path, behavioral_rsa=rsa, early_stopping_patience=1))
    reports = []

    summary = run_training_experiment(cfg, report=lambda metrics, ckpt: reports.append((metrics, ckpt)))

    assert summary["status"] == "diverged" and summary["stop_reason"] == "non_finite", summary  # not early stopping
    assert summary["message"].startswith("diverged at epoch 1") and "Fix: lower lr" in summary["message"]
    assert [m["epoch"] for m, _ in reports] == [-1, 0, 1]  # stopped after the diverged epoch: nothing to retry
    assert [m["diverged"] for m, _ in reports] == [False, False, True]
    last, ckpt = reports[-1]
    assert last["status"] == "diverged" and last["diverged_message"] == summary["message"]  # Tune's last result
    assert not math.isfinite(last["val_loss"]) or not math.isfinite(last["train_loss"])
    meta = json.loads((Path(ckpt) / "meta.json").read_text())
    assert meta["run_status"]["status"] == "diverged" and meta["metrics"][-1]["diverged"] is True
    status = json.loads((Path(summary["run_dir"]) / "run_status.json").read_text())
    assert status["status"] == "diverged" and status["message"] == summary["message"]
    metrics = pd.read_csv(Path(summary["run_dir"]) / "metrics.csv")
    assert metrics["epoch"].tolist() == [-1, 0, 1] and metrics["diverged"].tolist() == [False, False, True]
    assert np.isfinite(metrics[["val_loss"]].to_numpy()[:2]).all()


def test_cli_says_diverged_exit_2_and_resume_does_not_continue(demo_dir, tmp_path, exploding, capsys):
    config = diverging_config(demo_dir, tmp_path)
    assert cli.main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "diverged at epoch 1" in err and "Fix: lower lr" in err and "Traceback" not in err, err
    run = tmp_path / "results" / "diverging"
    before = (run / "metrics.csv").read_text()

    assert cli.main(["train", "--config", str(config), "--set", "epochs=6", "--resume"]) == 2
    assert "diverged at epoch 1" in capsys.readouterr().err
    assert (run / "metrics.csv").read_text() == before  # nothing trained on from the non-finite state


def test_constant_reference_rdm_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "zeros.npy"
    np.save(path, np.zeros((48, 48)))
    with pytest.raises(DataError, match=r"zeros\.npy: the RDM is constant .*Fix:"):
        load_rdm(path, n=48)
    ones = tmp_path / "ones.npy"
    np.save(ones, np.ones((5, 5)) - np.eye(5))
    with pytest.raises(DataError, match="constant"):
        load_rdm(ones)
    varied = np.ones((5, 5)) - np.eye(5)
    varied[0, 1] = varied[1, 0] = 2.0
    np.save(ones, varied)
    assert load_rdm(ones).shape == (5, 5)
