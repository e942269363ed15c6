"""A quiet, consistent terminal through the CLI, and the study's README.md record.

1. A tracker study (a YAML search space, MLflow on sqlite, W&B offline): none of Ray's token warning,
   Tune's slow-operation lines, W&B's actor/deprecation lines and run summaries, the Ray actor-restart
   error or MLflow's database lines reach the terminal; MLflow holds the config as params, no
   ``config/*`` metrics; README.md records the question, command, versions, machine and counts.
   ``--resume`` of the finished study says nothing is left and starts no Ray; a second driver is
   refused before Ray starts.
2. An interrupted study (SIGINT): one summary whose counts add up and agree with ``status``, one
   resume command (ours, not Tune's ``Tuner.restore``); ``status`` shows running (at most the CPUs)
   and queued trials while it runs.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from test_interruptions import driver_env, finished_perturbed, interrupt, write_space

# .ci/run's second step (-m long): a real cluster, storage or tracker end to end
pytestmark = [pytest.mark.slow, pytest.mark.long]
ROOT = Path(__file__).resolve().parent.parent
NOISE = (
    "Token authentication is enabled",
    "which may be a performance bottleneck",
    "wandb:",
    "WandbActor",
    "core_worker",
    "max_restarts",
    "Creating initial MLflow",
    "Tuner.restore",
    "reinit",
)


def cli(args: list[str], env: dict[str, str], timeout: int = 500) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hba_sweep", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def noise_in(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(n in line for n in NOISE)]


@pytest.mark.timeout(900)
def test_tracker_study_is_quiet_and_recorded(demo_dir, tmp_path):
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    from mlflow.tracking import MlflowClient

    space = tmp_path / "quiet.yaml"
    space.write_text(f"""name: quiet
base_config: {demo_dir}/train.yaml
param_space:
  epochs: 3
  random_seed: 1
  perturb_type: {{grid_search: [label_shuffle, random_target]}}
  perturb_epoch: 2
  perturb_length: 1
  perturb_seed: 42
resources: {{cpu: 1}}
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "WANDB_", "MLFLOW_", "HBA_SWEEP_FAULT"))}
    env.update(
        HOME=str(tmp_path / "home"), WANDB_MODE="offline", TUNE_WARN_THRESHOLD_S="0"
    )  # timings warn (after 60 s)
    storage, db = tmp_path / "rr", f"sqlite:///{tmp_path}/mlflow.db"
    run = cli(
        ["run", str(space), "--storage", str(storage), "--mlflow", db, "--wandb", "hba-test", "--no-dashboard"], env
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    assert not noise_in(out), noise_in(out)[:10]
    assert "3 trials finished, 0 failed, 0 skipped, 0 not finished (of 3)" in run.stdout
    root = storage / "quiet"
    routed = (root / "driver.log").read_text()  # what the terminal did not show stays in the study's log
    assert "Token authentication is enabled" in routed  # (Tune's timing lines too, once a run passes 60 s)

    client = MlflowClient(tracking_uri=db)
    runs = client.search_runs([client.get_experiment_by_name("quiet").experiment_id])
    assert len(runs) == 3
    for mlrun in runs:
        assert not [k for k in mlrun.data.metrics if k.startswith("config")], sorted(mlrun.data.metrics)
        assert mlrun.data.params["perturb_type"] in ("none", "label_shuffle", "random_target")
        assert "val_loss" in mlrun.data.metrics

    readme = (root / "README.md").read_text()
    for expected in (
        "## Question",
        "2 perturbation types (label_shuffle, random_target) x 1 start epochs (2)",
        "= 2 perturbed trials + 1 baseline(s) (3 trials)",
        f"run {space} --storage {storage}",
        "## Base config",
        "hba_sweep 0.1.0",
        "torch ",
        "ray ",
        "open_clip_torch ",
        "driver GPUs:",
        "ended",
        "3 finished, 0 failed, 0 skipped, 0 not finished",
        f"python -m hba_sweep status {root}",
        f"python -m hba_sweep analyze {root}",
    ):
        assert expected in readme, (expected, readme)

    started = time.monotonic()
    again = cli(["run", str(space), "--storage", str(storage), "--resume"], env, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing left to run: all 3 trials are finished (Ray was not started)" in again.stdout
    assert "Started a local Ray instance" not in again.stderr and time.monotonic() - started < 60
    assert json.loads((root / "study.json").read_text())["runs"][-1]["nothing_left"] is True

    # a live driver (its command line is one: the lock names a running hba_sweep driver, not a reused pid)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "-m", "hba_sweep", "run"])
    try:
        while "hba_sweep" not in " ".join(psutil.Process(holder.pid).cmdline()):  # until exec
            time.sleep(0.02)
        (root / "driver.lock").write_text(
            json.dumps({"pid": holder.pid, "host": socket.gethostname(), "started": "now", "command": "another driver"})
        )
        refused = cli(["run", str(space), "--storage", str(storage), "--resume"], env, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert refused.returncode == 2 and "another driver runs this study" in refused.stderr, refused.stderr
    assert "Started a local Ray instance" not in refused.stderr


@pytest.mark.timeout(900)
def test_interrupted_study_has_one_summary_and_our_resume_command(tmp_path):
    from hba_sweep.sweep.status import study_status
    from hba_sweep.training.demo_data import make_demo_data

    data = tmp_path / "demo"
    make_demo_data(data)
    space = write_space(
        tmp_path / "space.py",
        data,
        """"perturb_type": tune.grid_search(["label_shuffle", "random_target"]),
    "perturb_epoch": tune.grid_search([1, 2, 3]),""",
    )
    root = tmp_path / "rr" / "study"
    cmd = [sys.executable, "-m", "hba_sweep", "run", str(space), "--storage", str(tmp_path / "rr"), "--no-dashboard"]
    log = open(tmp_path / "driver.out", "wb")
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=driver_env(data), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    seen: set[str] = set()
    try:
        deadline = time.monotonic() + 300
        while not finished_perturbed(root):
            assert proc.poll() is None, (tmp_path / "driver.out").read_text()[-3000:]
            assert time.monotonic() < deadline, "no perturbed trial finished in 300 s"
            if (root / "study.json").is_file():
                try:
                    states = [r.state for r in study_status(root)]
                except Exception:  # the manifest is being replaced right now
                    states = []
                assert states.count("running") <= 2, states  # 2 CPUs, 1 per trial: the rest are queued
                seen.update(states)
            time.sleep(0.5)
        how = interrupt(proc, grace=120.0)  # a loaded machine may take a while to stop Ray; never skipped
    finally:
        log.close()
    out = (tmp_path / "driver.out").read_text()
    assert "running" in seen, seen
    assert how == "SIGINT", f"the driver did not stop on SIGINT within 120 s\n{out[-3000:]}"
    assert proc.returncode == 130, out[-3000:]
    driver_lines = [line for line in out.splitlines() if not re.search(r"\(\w+ pid=\d+", line)]
    assert not noise_in("\n".join(driver_lines)), noise_in(out)[:10]
    summaries = [line for line in driver_lines if re.match(r"\d+ trials finished, ", line)]
    assert len(summaries) == 1, summaries
    ok, failed, skipped, unfinished, total = map(int, re.findall(r"\d+", summaries[0].split(";")[0]))
    assert ok + failed + skipped + unfinished == total == 7 and unfinished > 0, summaries
    states = [r.state for r in study_status(root)]
    assert states.count("finished") == ok and len(states) == 7, (states, summaries)
    resumes = [line for line in driver_lines if "--resume" in line and line.startswith("next: ")]
    assert resumes == [
        f"next: python -m hba_sweep run {space} --storage {tmp_path / 'rr'} --resume   "
        "(finishes unfinished, retries failed trials)"
    ], driver_lines[-15:]
    assert "Tuner.restore" in (root / "driver.log").read_text()  # Tune's own hint, kept in the study's log
    assert "interrupted" in (root / "README.md").read_text()
