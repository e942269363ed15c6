"""A study on object storage, through the CLI: run -> status -> analyze -> run --resume against an S3
API server on 127.0.0.1 (moto's server, started and stopped by this test), the storage given as
``s3://KEY:SECRET@bucket/prefix?endpoint_override=...&scheme=http``.

The experiment name joins the URI's path (the query kept), every command takes the same
``--storage`` URI, the printed next commands are shell-quoted, and no credential is printed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_small_run_config
from local_cluster import free_ports

# .ci/run's second step (-m long): a real cluster, storage or tracker end to end
pytestmark = [pytest.mark.slow, pytest.mark.long]
ROOT = Path(__file__).resolve().parent.parent
SECRET = "s3cr3t-Key-not-to-print"


@pytest.fixture(scope="module")
def s3():
    """An S3 endpoint on 127.0.0.1 with one bucket; stopped after the module."""
    from moto.server import ThreadedMotoServer

    port = free_ports(1)[0]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        import pyarrow.fs

        fs = pyarrow.fs.S3FileSystem(
            access_key="hba",
            secret_key=SECRET,
            endpoint_override=f"127.0.0.1:{port}",
            scheme="http",
            region="us-east-1",
            allow_bucket_creation=True,
        )
        fs.create_dir("studies")
        yield f"127.0.0.1:{port}", fs
    finally:
        server.stop()


def cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hba_sweep", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.timeout(900)
def test_run_status_analyze_resume_on_s3(s3, demo_dir, tmp_path):
    endpoint, fs = s3
    config, _, _ = write_small_run_config(demo_dir, tmp_path, "s3study")
    space = tmp_path / "s3study.py"
    space.write_text(f"""
NAME = "s3study"
BASE_CONFIG = {str(config)!r}
EVALSETS = {str(demo_dir / "evalsets.yaml")!r}
PARAM_SPACE = {{"epochs": 2, "random_seed": 1, "perturb_type": "label_shuffle", "perturb_epoch": 1,
               "perturb_length": 1, "perturb_seed": 42}}
RESOURCES = {{"cpu": 1}}
""")
    uri = f"s3://hba:{SECRET}@studies/team-a/sweeps?endpoint_override={endpoint}&scheme=http&region=us-east-1"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AWS_", "HBA_SWEEP_FAULT"))}
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        HOME=str(tmp_path / "home"),
    )
    outputs = []

    run = cli(["run", str(space), "--storage", uri, "--no-dashboard"], env, tmp_path)
    outputs.append(run.stdout + run.stderr)
    assert run.returncode == 0, outputs[-1][-4000:]
    # the experiment is <prefix>/<name> inside the URI's path, before its query
    assert fs.get_file_info("studies/team-a/sweeps/s3study/study.json").size > 0
    status_line = next(line for line in run.stdout.splitlines() if line.startswith("status: "))
    assert "'s3://***@studies/team-a/sweeps/s3study?endpoint_override=" in status_line  # quoted: & ? are special

    status = cli(["status", "s3study", "--storage", uri], env, tmp_path, timeout=120)
    outputs.append(status.stdout + status.stderr)
    assert status.returncode == 0, outputs[-1]
    assert "2 finished (2 trials)" in status.stdout

    analyze = cli(["analyze", "s3study", "--storage", uri, "--datasets", "things", "--local"], env, tmp_path)
    outputs.append(analyze.stdout + analyze.stderr)
    assert analyze.returncode == 0, outputs[-1][-4000:]
    assert fs.get_file_info("studies/team-a/sweeps/s3study/analysis/results.parquet").size > 0
    final = [line for line in analyze.stderr.splitlines() if line.startswith("analyze took")]
    assert final and "results in s3://" in final[-1] and "s3study/analysis" in final[-1], final  # not a deleted folder
    assert "hba_analysis_" not in analyze.stdout + analyze.stderr

    resume = cli(["run", str(space), "--storage", uri, "--no-dashboard", "--resume"], env, tmp_path)
    outputs.append(resume.stdout + resume.stderr)
    assert resume.returncode == 0, outputs[-1][-4000:]
    assert "nothing left to run: all 2 trials are finished (Ray was not started)" in resume.stdout
    assert all(SECRET not in out for out in outputs), "a credential was printed"
