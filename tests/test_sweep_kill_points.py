"""SIGKILL of the driver at every named point of its life; ``--resume`` always finishes the study.

Each point (hba_sweep/foundation/faults.py) is one case: a driver subprocess attached to this test's
Ray SIGKILLs itself there; status then says the driver is gone; a second driver with --resume
exits 0 with every trial finished, and no trial finished before the kill was trained again
(its checkpoints and done marker are untouched). Trials train with the sleep stand-in.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import ray

from hba_sweep.sweep.status import read_study

pytestmark = [pytest.mark.slow, pytest.mark.long]
ROOT = Path(__file__).resolve().parent.parent
POINTS = [
    "locked",
    "manifest_written",
    "suggested:1",
    "suggested:3",
    "result:4",
    "trial_complete:1",
    "fit_returned",
    "ended",
]
DRIVER = """
import sys
from hba_sweep.sweep.runner import RunOptions, run_study
from hba_sweep.sweep.spec import load_search_space
from tests.support.sleep_trainable import sleep_training
from tests.support.stand_in import training
with training(sleep_training):
    outcome = run_study(load_search_space(sys.argv[1]), RunOptions(storage=sys.argv[2], address=sys.argv[3], verbose=0,
                        resume=len(sys.argv) > 4))
sys.exit(outcome.exit_code)
"""


@pytest.fixture(scope="module")
def cluster():
    info = ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    yield info.address_info["address"]
    ray.shutdown()


def snapshot(trial: Path) -> dict:
    files = [*trial.glob("checkpoint_*/*"), trial / "done.json"]
    return {str(p.relative_to(trial)): (p.stat().st_size, p.stat().st_mtime_ns) for p in files if p.is_file()}


def driver(space: Path, storage: Path, address: str, kill: str | None, resume: bool = False):
    env = {k: v for k, v in os.environ.items() if k != "HBA_SWEEP_FAULT"}
    env.update(PYTHONPATH=str(ROOT), HBA_SLEEP_EPOCH_SECONDS="0.1", **({"HBA_SWEEP_FAULT": kill} if kill else {}))
    args = [sys.executable, "-c", DRIVER, str(space), str(storage), address] + (["--resume"] if resume else [])
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("point", POINTS)
def test_driver_killed_at_point_then_resumed(point, cluster, demo_dir, tmp_path):
    space = tmp_path / "space.py"
    space.write_text(f"""
from ray import tune
NAME = "study"
BASE_CONFIG = {str(demo_dir / "train.yaml")!r}
PARAM_SPACE = {{"backbone": "hba-tiny", "pretrained": "none", "device": "cpu", "epochs": 4,
    "perturb_type": "label_shuffle", "perturb_epoch": tune.grid_search([0, 2]), "perturb_length": 1}}
RESOURCES = {{"cpu": 1}}
MAX_FAILURES = 0
""")
    killed = driver(space, tmp_path / "rr", cluster, point)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-2000:]
    root = tmp_path / "rr" / "study"
    if (root / "study.json").is_file():
        line, rows = read_study(root)
        assert "driver: gone" in line and "running" not in {r.state for r in rows}, (line, rows)
    done = {p.name: snapshot(p) for p in root.glob("*/") if (p / "done.json").is_file()}

    resumed = driver(space, tmp_path / "rr", cluster, None, resume=True)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    line, rows = read_study(root)
    assert [r.state for r in rows] == ["finished"] * 3 and "not running" in line, (line, rows)
    for name, files in done.items():
        assert snapshot(root / name) == files, name  # finished before the kill: not trained again
    for trial in root.glob("cliphba_*/"):
        meta = json.loads(sorted(trial.glob("checkpoint_*/meta.json"))[-1].read_text())
        assert [r["epoch"] for r in meta["metrics"]] == [-1, 0, 1, 2, 3], trial.name
    assert not (root / "driver.lock").exists()
