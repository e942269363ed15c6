"""Interruptions: a trial's worker killed mid-epoch, and the driver interrupted mid-study.

1. SIGKILL of the Ray worker process that executes a trial, in the middle of an epoch (after a
   few optimizer steps that are then lost): Tune retries the trial (MAX_FAILURES) from its last
   checkpoint and every epoch's train_loss / val_loss / behavioral_rsa_rho in the trial's
   run/metrics.csv equals an uninterrupted twin's exactly (CPU).
2. The driver (`python -m hba_sweep run`) gets SIGINT (then SIGKILL if it lingers) after some
   trials have finished; `run --resume` finishes the study with exit 0, re-runs no finished trial
   (result rows and checkpoint files unchanged) and `analyze` lists each (trial, epoch) once.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import ray
from support import stand_in  # noqa: E402

from hba_sweep.sweep.expand import Trial, expand  # noqa: E402
from hba_sweep.sweep.runner import RunOptions, independent, run_trials  # noqa: E402
from hba_sweep.sweep.spec import load_search_space  # noqa: E402
from hba_sweep.training.demo_data import make_demo_data  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
METRICS = ["train_loss", "val_loss", "behavioral_rsa_rho"]
EPOCHS = [-1, 0, 1, 2, 3]
KILL_EPOCH, KILL_AFTER_BATCHES = 2, 3


def write_space(path: Path, data: Path, grid: str, extra: str = "") -> Path:
    """A small study on the demo data: epochs 4, seed 1, the given PARAM_SPACE grid entries."""
    path.write_text(f"""
from ray import tune

NAME = "study"
BASE_CONFIG = {str(data / "train.yaml")!r}
EVALSETS = {str(data / "evalsets.yaml")!r}
PARAM_SPACE = {{
    "backbone": "hba-tiny", "pretrained": "none", "device": "cpu", "epochs": 4,
    "random_seed": 1, "perturb_length": 1, "perturb_seed": 42,
    {grid}
}}
RESOURCES = {{"cpu": 1}}
MAX_FAILURES = 2
{extra}
""")
    return path


# ---- 1. a trial's worker process killed mid-epoch ---------------------------------------
def train_killed_mid_epoch(cfg, report, marker: str):
    """The real training run; in trial 'killed' the worker SIGKILLs itself inside epoch 2, once.

    Runs inside the Ray worker (this function travels by value). The marker file (O_EXCL) makes
    it fire once; it records the killed pid.
    """
    from ray import tune

    from hba_sweep.training import loop as training

    original = training.train_one_epoch
    victim = tune.get_context().get_trial_name() == "killed"

    def one_epoch(*args):
        epoch, progress = args[6], args[-1]
        if not (victim and epoch == KILL_EPOCH):
            return original(*args)
        batches = []

        def count(n):
            progress(n)
            batches.append(n)
            if len(batches) == KILL_AFTER_BATCHES:  # optimizer has stepped: the in-memory model moved on
                try:
                    fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    return
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                os.kill(os.getpid(), signal.SIGKILL)

        return original(*args[:-1], count)

    training.train_one_epoch = one_epoch
    try:
        return training.run_training_experiment(cfg, report=report)
    finally:
        training.train_one_epoch = original


def test_worker_killed_mid_epoch_resumes_exactly(tmp_path, monkeypatch):
    monkeypatch.delenv("HBA_SWEEP_FAULT", raising=False)
    data = tmp_path / "demo"
    make_demo_data(data)
    space = load_search_space(
        write_space(
            tmp_path / "space.py",
            data,
            '"perturb_type": "label_shuffle", "perturb_epoch": 2,',
            "FORK_FROM_BASELINE = False",
        )
    )
    (config,) = [t.config for t in expand(space).trials]
    trials = [Trial(name="killed", config=dict(config)), Trial(name="clean", config=dict(config))]
    marker = tmp_path / "killed.pid"
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the worker has no tests/ on its path
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        opts = RunOptions(storage=str(tmp_path / "rr"), verbose=0)
        root = str(tmp_path / "rr" / "kill")
        with stand_in.training(functools.partial(train_killed_mid_epoch, marker=str(marker))):
            results = {r.config["run_name"]: r for r in run_trials(independent(trials, root), space, opts, root)[1]}
    finally:
        ray.shutdown()
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert marker.is_file(), "the worker was never killed"
    killed_pid = int(marker.read_text())
    assert results["killed"].error is None and results["clean"].error is None

    trial_dir = tmp_path / "rr" / "kill" / "killed"
    assert f"pid: {killed_pid}" in (trial_dir / "error.txt").read_text()  # Tune saw that worker die
    rows = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]
    after = [r for r in rows if r["epoch"] >= KILL_EPOCH]
    assert [r["epoch"] for r in after] == [2, 3]  # epochs after the kill reported once each
    assert all(r["pid"] != killed_pid for r in after)  # by a new worker process
    # retried from the last checkpoint (epoch 1), not from scratch: epochs -1..1 not trained again
    assert [r["epoch"] for r in rows if r["pid"] != killed_pid] == [2, 3]

    killed = pd.read_csv(trial_dir / "run" / "metrics.csv")
    clean = pd.read_csv(tmp_path / "rr" / "kill" / "clean" / "run" / "metrics.csv")
    assert killed["epoch"].tolist() == clean["epoch"].tolist() == EPOCHS
    assert not killed["inherited"].any()
    assert killed[METRICS].iloc[1:].notna().all().all()
    pd.testing.assert_frame_equal(killed[METRICS], clean[METRICS], check_exact=True)
    for key in METRICS:
        assert results["killed"].metrics[key] == results["clean"].metrics[key]


# ---- 2. the driver interrupted mid-study ------------------------------------------------
def driver_env(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HBA_SWEEP_FAULT", "RAY_ADDRESS")}
    env.update(HBA_DEMO_DATA=str(data), PYTHONUNBUFFERED="1")
    return env


def finished_perturbed(root: Path) -> list[Path]:
    """Perturbed trials whose run/metrics.csv already holds the last epoch."""
    done = []
    for metrics in root.glob("*_e[0-9]_*/run/metrics.csv"):
        try:
            if pd.read_csv(metrics)["epoch"].iloc[-1] == EPOCHS[-1]:
                done.append(metrics.parent.parent)
        except Exception:  # being replaced right now
            pass
    return done


def interrupt(proc: subprocess.Popen, grace: float = 20.0) -> str:
    """SIGINT the driver; SIGKILL it (and every process it started) if it has not exited in ``grace`` s."""
    import psutil

    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(grace)
        how = "SIGINT"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        how = "SIGKILL"
    for child in children:  # Ray's processes started by this driver (raylet, GCS, workers), not any other Ray
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(children, timeout=10)
    return how


def snapshot(trial_dir: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of the trial's own files: checkpoints, run/ and done.json (Tune's logs of a
    finished trial are written again on --resume, from the replayed rows)."""
    files = [*trial_dir.glob("checkpoint_*/*"), *trial_dir.glob("run/*"), trial_dir / "done.json"]
    return {str(p.relative_to(trial_dir)): (p.stat().st_size, p.stat().st_mtime_ns) for p in files if p.is_file()}


@pytest.mark.timeout(900)  # two driver runs, each allowed 400 s
def test_driver_interrupted_then_resumed(tmp_path):
    from hba_sweep.cli import main
    from hba_sweep.sweep.status import study_status

    data = tmp_path / "demo"
    make_demo_data(data)
    space = write_space(
        tmp_path / "space.py",
        data,
        """"perturb_type": tune.grid_search(["label_shuffle", "random_target"]),
    "perturb_epoch": tune.grid_search([1, 2, 3]),""",
    )  # 1 baseline + 6 forks: some still run at the interrupt
    root = tmp_path / "rr" / "study"
    cmd = [
        sys.executable,
        "-m",
        "hba_sweep",
        "run",
        str(space),
        "--storage",
        str(tmp_path / "rr"),
        "--no-dashboard",
        "--verbose",
        "0",
    ]
    log = open(tmp_path / "driver.log", "wb")
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=driver_env(data), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 240
        while not finished_perturbed(root):
            assert proc.poll() is None, f"the driver exited early:\n{(tmp_path / 'driver.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, "no perturbed trial finished in 240 s"
            time.sleep(0.2)
        how = interrupt(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    first = (tmp_path / "driver.log").read_text()
    if how == "SIGINT":  # Tune saved its state; the driver says so, exits 130 and starts no later phase
        assert proc.returncode == 130, f"{proc.returncode}:\n{first[-3000:]}"
        # Ray forwards its stopped workers' own exit stacks, each line tagged "(train_hba pid=N)"; the
        # driver itself must print none
        driver_lines = [line for line in first.splitlines() if not re.search(r"\(\w+ pid=\d+", line)]
        assert not any("Traceback" in line for line in driver_lines) and "interrupted: " in first, first[-3000:]
    else:
        assert proc.returncode == -signal.SIGKILL

    states = {row.name: row for row in study_status(root)}
    done = {name for name, row in states.items() if row.state == "finished"}
    assert len(states) == 7 and done and len(done) < 7, {n: r.state for n, r in states.items()}
    before = {name: snapshot(root / name) for name in done}

    resumed = subprocess.run(
        [*cmd, "--resume"], cwd=ROOT, env=driver_env(data), capture_output=True, text=True, timeout=400
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "7 trials finished, 0 failed, 0 skipped, 0 not finished (of 7)" in resumed.stdout
    assert all(row.state == "finished" for row in study_status(root))
    for name, files in before.items():  # finished trials untouched: no row, checkpoint or file rewritten
        assert snapshot(root / name) == files, name
    for trial in root.glob("cliphba_*/"):
        history = pd.read_csv(trial / "run" / "metrics.csv")
        assert history["epoch"].tolist() == EPOCHS, trial.name
        rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines() if line.strip()]
        epochs = [r["epoch"] for r in rows]
        if trial.name in done:
            assert len(epochs) == len(set(epochs)), (trial.name, epochs)  # finished: no epoch reported again
        else:  # interrupted: Tune may redo the epochs after its last saved state; exact resume, same numbers
            seen = {}
            for r in rows:
                values = (r.get("train_loss"), r["val_loss"], r["behavioral_rsa_rho"])
                assert seen.setdefault(r["epoch"], values) == values, (trial.name, r["epoch"])

    assert main(["analyze", str(root), "--datasets", "things"]) == 0
    results = pd.read_parquet(root / "analysis" / "results.parquet")
    assert results["trial_id"].nunique() == 7
    per_trial = results.groupby("trial_id")["epoch"].apply(sorted)
    assert all(epochs == EPOCHS for epochs in per_trial), per_trial
    assert not results.duplicated(["trial_id", "epoch", "dataset", "reference", "metric"]).any()
