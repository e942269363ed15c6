"""Early stopping that really triggers: a baseline, and forks stopping before, inside and after the window.

The loss is made to plateau with a learning rate far below float32 resolution (the adapters do not
change), so the published rule -- stop once ``patience`` epochs in a row do not strictly improve
on the best validation loss -- must stop each run; the expected stop is computed from the recorded
losses (the oracle), and each run's status says whether its perturbation window ran.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import write_small_run_config

from hba_sweep.artifacts import checkpoint as ckpt
from hba_sweep.config import load_config, run_dir
from hba_sweep.foundation.errors import CheckpointError
from hba_sweep.training.loop import STATUS_FILE, run_training_experiment

PATIENCE = 2
EPOCHS = 7


def metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def expected_stop(rows: list[dict], patience: int, start_best: float) -> int | None:
    """The epoch after which the published rule stops (None: it never does), from the recorded losses."""
    best, without = start_best, 0
    for row in rows:
        loss = float(row["val_loss"])
        best, without = (loss, 0) if loss < best else (best, without + 1)
        if without == patience:
            return int(row["epoch"])
    return None


@pytest.fixture(scope="module")
def plateau(demo_dir, tmp_path_factory):
    """A config factory (tiny data, no RSA, plateauing loss) and a baseline that stopped early."""
    root = tmp_path_factory.mktemp("early")
    config, _, _ = write_small_run_config(demo_dir, root, "base")

    def make(**changes):
        values = {
            "epochs": EPOCHS,
            "lr": 1e-30,
            "early_stopping_patience": PATIENCE,
            "behavioral_rsa": False,
            "run_name": "base",
            **changes,
        }
        return load_config(config, values)

    base = make()
    summary = run_training_experiment(base)
    return make, base, summary


def test_baseline_stops_early_as_published(plateau):
    _, base, summary = plateau
    rows = metrics(run_dir(base))
    trained = [r for r in rows if int(r["epoch"]) >= 0]
    stop = expected_stop(trained, PATIENCE, float(rows[0]["val_loss"]))
    assert stop is not None and stop < EPOCHS - 1  # it really triggered
    assert int(rows[-1]["epoch"]) == stop == summary["epoch"]
    assert summary["status"] == "early_stopped" and summary["stop_reason"] == "early_stopping"
    assert summary["window_completed"] is None
    status = json.loads((run_dir(base) / STATUS_FILE).read_text())
    assert status["status"] == "early_stopped" and status["last_epoch"] == stop
    assert status["precision_used"] == summary["precision_used"] == "fp32"  # the published default
    assert ckpt.read_meta(ckpt.epoch_dir(run_dir(base), stop))["run_status"]["status"] == "early_stopped"
    assert ckpt.list_epochs(run_dir(base)) == list(range(-1, stop + 1))


def fork(make, base, epoch, length, **changes):
    cfg = make(
        run_name=f"fork_e{epoch}_l{length}_{changes.get('fork_early_stopping', 'reset')}",
        perturb_type="label_shuffle",
        perturb_epoch=epoch,
        perturb_length=length,
        init_from=str(run_dir(base)),
        init_epoch=epoch - 1,
        **changes,
    )
    return cfg, run_training_experiment(cfg)


def test_fork_resets_early_stopping_and_stops_after_its_window(plateau):
    make, base, _ = plateau
    cfg, summary = fork(make, base, 1, 1)
    rows = metrics(run_dir(cfg))
    own = [r for r in rows if r["inherited"] == "False"]
    start = ckpt.read_meta(ckpt.epoch_dir(run_dir(cfg), int(own[-1]["epoch"])))["fork_start_val_loss"]
    base_rows = {int(r["epoch"]): r for r in metrics(run_dir(base))}
    assert start == pytest.approx(float(base_rows[0]["val_loss"]), rel=1e-6)  # re-evaluated forked state
    stop = expected_stop(own, PATIENCE, start)  # counter restarted at 0 from the fork
    assert [int(r["epoch"]) for r in own] == list(range(1, stop + 1)) and stop == 1 + PATIENCE - 1
    assert own[0]["perturbation_active"] == "True"
    assert summary["status"] == "early_stopped" and summary["window_completed"] is True


def test_fork_stopping_inside_its_window_is_not_a_finished_perturbed_run(plateau):
    make, base, _ = plateau
    cfg, summary = fork(make, base, 1, 4)  # window 1..4, the plateau stops it after epoch 2
    own = [r for r in metrics(run_dir(cfg)) if r["inherited"] == "False"]
    assert int(own[-1]["epoch"]) == 2 and all(r["perturbation_active"] == "True" for r in own)
    assert summary["status"] == "window_incomplete" and summary["window_completed"] is False
    assert json.loads((run_dir(cfg) / STATUS_FILE).read_text())["status"] == "window_incomplete"


def test_inherited_exhausted_counter_stops_the_fork_before_its_window(plateau):
    make, base, _ = plateau
    last = ckpt.list_epochs(run_dir(base))[-1]  # the baseline's counter is exhausted there
    cfg, summary = fork(make, base, last + 1, 1, fork_early_stopping="inherit")
    assert all(r["inherited"] == "True" for r in metrics(run_dir(cfg)))  # not one epoch trained
    assert summary["status"] == "window_incomplete" and summary["window_completed"] is False
    cfg, summary = fork(make, base, last + 1, 1)  # the published reset: the same fork trains its window
    assert summary["window_completed"] is True


def test_fork_past_the_baselines_last_epoch_is_an_error_not_a_fresh_run(plateau):
    make, base, _ = plateau
    last = ckpt.list_epochs(run_dir(base))[-1]
    with pytest.raises(CheckpointError, match=f"epoch {last + 1}.*never trained from scratch"):
        fork(make, base, last + 2, 1)
    cfg = make(
        run_name="published_style",
        perturb_type="label_shuffle",
        perturb_epoch=last + 2,
        perturb_length=1,
        baseline_checkpoint_path=str(run_dir(base)),
    )
    with pytest.raises(CheckpointError, match="never trained from scratch"):
        run_training_experiment(cfg)
    assert not ckpt.list_epochs(run_dir(cfg))


def test_perturbed_run_stopped_before_its_window_never_reads_as_perturbed(plateau):
    make, _, _ = plateau
    cfg = make(run_name="scratch_late_window", perturb_type="label_shuffle", perturb_epoch=5, perturb_length=1)
    summary = run_training_experiment(cfg)
    rows = metrics(run_dir(cfg))
    assert int(rows[-1]["epoch"]) < 5 and not any(r["perturbation_active"] == "True" for r in rows)
    assert summary["status"] == "window_incomplete" and summary["window_completed"] is False
