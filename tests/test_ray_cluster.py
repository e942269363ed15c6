"""A study on a real two-node cluster started with ``ray start`` (Ray 2.60 token authentication on,
as Ray sets it up), through the CLI as a user runs it: ``run --address``, ``status``, ``analyze``;
the same study submitted as a Ray Job (``run --submit``); wrong addresses and tokens as exit-2
messages. The cluster is this test's own (ports, temp dirs, HOME) and is stopped by it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_small_run_config
from local_cluster import LocalCluster, free_ports

# .ci/run's second step (-m long): a real cluster, storage or tracker end to end
pytestmark = [pytest.mark.slow, pytest.mark.long]
ROOT = Path(__file__).resolve().parent.parent


def space_file(root: Path, demo_dir: Path, name: str) -> Path:
    """A small study: one baseline and two forks (2 epochs on 40 images), so both nodes get a trial."""
    config, _, _ = write_small_run_config(demo_dir, root, name)
    path = root / f"{name}.py"
    path.write_text(f"""
from ray import tune
NAME = {name!r}
BASE_CONFIG = {str(config)!r}
EVALSETS = {str(demo_dir / "evalsets.yaml")!r}
PARAM_SPACE = {{"epochs": 2, "random_seed": 1, "perturb_type": "label_shuffle",
               "perturb_epoch": tune.grid_search([0, 1]), "perturb_length": 1, "perturb_seed": 42}}
RESOURCES = {{"cpu": 1}}
""")
    return path


def cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hba_sweep", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(":")}
    env.pop("HBA_SWEEP_FAULT", None)
    with LocalCluster(home, env) as c:
        c.start()
        c.add_node()
        c.wait_for_nodes(2)
        yield c
    assert not c.processes(), "the cluster's processes outlived stop()"


@pytest.fixture()
def env(cluster):
    """A user's shell on the head machine: their HOME (Ray's token), nothing Ray-specific exported."""
    return dict(cluster.env)


@pytest.mark.timeout(600)
def test_study_on_a_ray_start_cluster(cluster, env, demo_dir, tmp_path):
    space = space_file(tmp_path, demo_dir, "clusterstudy")
    storage = tmp_path / "shared storage"  # a space: the printed commands must be quoted
    run = cli(["run", str(space), "--address", cluster.address, "--storage", str(storage)], env, tmp_path)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    assert "InvalidAuthToken" not in out and "Traceback" not in out
    assert f"Ray dashboard: http://127.0.0.1:{cluster.dashboard_port}" in run.stdout
    assert "ray get-auth-token" in run.stdout and cluster.token_text() not in out
    exp = storage / "clusterstudy"
    nodes = set()
    for result in exp.glob("*/result.json"):  # one experiment: a directory per trial
        nodes |= {json.loads(line)["node_id"] for line in result.read_text().splitlines() if line.strip()}
    assert len(nodes) == 2, nodes  # trials ran on both nodes

    status = cli(["status", str(exp)], env, tmp_path, timeout=120)
    assert status.returncode == 0, status.stderr
    assert "3 finished (3 trials)" in status.stdout, status.stdout
    analyze = cli(["analyze", str(exp), "--datasets", "things", "--local"], env, tmp_path)
    assert analyze.returncode == 0, analyze.stderr[-3000:]
    assert (exp / "analysis" / "results.parquet").is_file() and (exp / "analysis" / "report.md").is_file()


def test_unreachable_address_is_exit_2_with_the_fix():
    from hba_sweep.foundation.errors import ConfigError
    from hba_sweep.sweep.cluster import join

    port = free_ports(1)[0]
    with pytest.raises(ConfigError, match=f"--address=127.0.0.1:{port}: no Ray cluster answers there.*Fix: start"):
        join(f"127.0.0.1:{port}")
    with pytest.raises(ConfigError, match="is not host:port"):
        join("headnode")


JOIN = """
import sys, time
from hba_sweep.foundation.errors import HBAError
from hba_sweep.sweep.cluster import join
started = time.monotonic()
try:
    join(sys.argv[1], "RAY_ADDRESS")
except HBAError as exc:
    print(f"exit 2 after {time.monotonic() - started:.1f} s: {exc}")
"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("token", [None, "not-the-cluster-token"])
def test_missing_or_wrong_token_is_exit_2_with_the_fix(cluster, env, tmp_path, token):
    home = tmp_path / "elsewhere"  # another machine's user: no token, or another cluster's
    (home / ".ray").mkdir(parents=True)
    if token:
        (home / ".ray" / "auth_token").write_text(token)
    out = subprocess.run(
        [sys.executable, "-c", JOIN, cluster.address],
        env=dict(env, HOME=str(home)),
        capture_output=True,
        text=True,
        timeout=150,
    )
    expected = "refused this machine's Ray token" if token else "this machine has no token"
    assert f"RAY_ADDRESS={cluster.address}: the cluster" in out.stdout and expected in out.stdout, out
    assert "ray get-auth-token" in out.stdout and "Traceback" not in out.stderr
    print(out.stdout.split(":")[0])  # the time to the message (-s shows it): one short attempt, not 20 s of retries


def wait_for_job(cluster, submission_id: str, timeout: float = 500) -> str:
    from ray.job_submission import JobStatus, JobSubmissionClient

    jobs = JobSubmissionClient(cluster.dashboard, headers={"Authorization": f"Bearer {cluster.token_text()}"})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = jobs.get_job_status(submission_id)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return str(status.value)
        time.sleep(3)
    return "TIMEOUT"


@pytest.mark.timeout(900)
def test_study_submitted_as_a_ray_job(cluster, env, demo_dir, tmp_path):
    space = space_file(tmp_path, demo_dir, "jobstudy")
    storage = tmp_path / "job storage"
    sub = cli(["run", str(space), "--submit", cluster.dashboard, "--storage", str(storage)], env, tmp_path)
    assert sub.returncode == 0, sub.stdout + sub.stderr[-3000:]
    exp = storage / "jobstudy"
    job = json.loads((exp / "job.json").read_text())
    assert job["submission_id"].startswith("hba_jobstudy_") and job["dashboard"] == cluster.dashboard
    assert f"{cluster.dashboard}/#/jobs/{job['submission_id']}" in sub.stdout
    assert "ray get-auth-token" in sub.stdout and cluster.token_text() not in sub.stdout + json.dumps(job)
    assert f"python -m hba_sweep status '{exp}'" in sub.stdout  # quoted: the path has a space

    state = wait_for_job(cluster, job["submission_id"])
    logs = cli(["logs", str(exp)], env, tmp_path, timeout=120)
    assert state == "SUCCEEDED", logs.stdout[-4000:] + logs.stderr[-2000:]
    assert "Trial name" in logs.stdout and "3 trials finished, 0 failed" in logs.stdout  # Tune's table, the summary
    status = cli(["status", str(exp)], env, tmp_path, timeout=120)
    assert status.returncode == 0, status.stderr
    assert f"Ray job {job['submission_id']}: SUCCEEDED" in status.stdout and "3 finished (3 trials)" in status.stdout
    stop = cli(["stop", "jobstudy", "--storage", str(storage)], env, tmp_path, timeout=120)
    assert stop.returncode == 0 and "not running" in stop.stdout, stop.stdout + stop.stderr
