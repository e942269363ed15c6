"""Environment faults are exit-2 messages with the fix, said before Ray starts where possible."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import ray

from hba_sweep import cli

SPACE = """
NAME = "env"
BASE_CONFIG = {base!r}
PARAM_SPACE = {{"epochs": 1}}
RESOURCES = {{"cpu": 1}}
MAX_FAILURES = 0
"""


def invoke(argv: list) -> int:
    return int(cli.main([str(a) for a in argv]))


def space_file(demo_dir: Path, tmp_path: Path) -> Path:
    space = tmp_path / "space.py"
    space.write_text(SPACE.format(base=str(demo_dir / "train.yaml")))
    return space


@pytest.fixture()
def no_ray(monkeypatch):
    """Ray must not start: the check comes first."""
    from hba_sweep.sweep import runner

    def connect(opts):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(runner, "connect", connect)


def test_storage_naming_a_regular_file_is_refused_before_ray(demo_dir, tmp_path, capsys, no_ray):
    storage = tmp_path / "results.txt"
    storage.write_text("not a folder")
    code = invoke(["run", space_file(demo_dir, tmp_path), "--storage", storage, "--no-dashboard"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"--storage {storage}" in err and "regular file, not a folder" in err and "Fix:" in err, err
    assert not ray.is_initialized() and storage.read_text() == "not a folder"


def test_storage_under_an_unwritable_parent_is_refused_before_ray(demo_dir, tmp_path, capsys, no_ray):
    code = invoke(["run", space_file(demo_dir, tmp_path), "--storage", "/sys/hba_sweep_results", "--no-dashboard"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "/sys" in err and "not permitted" in err and "--storage" in err and "Traceback" not in err, err
    assert not ray.is_initialized()


@pytest.mark.slow
def test_long_tmpdir_does_not_stop_ray(demo_dir, tmp_path, capsys, monkeypatch):
    long_tmp = tmp_path / ("t" * 60)
    long_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(long_tmp))
    monkeypatch.delenv("RAY_TMPDIR", raising=False)
    code = invoke(
        ["run", space_file(demo_dir, tmp_path), "--storage", tmp_path / "rr", "--no-dashboard", "--verbose", "0"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "TMPDIR is too long for Ray's sockets" in captured.out + captured.err


def test_lock_of_a_reused_pid_is_taken_over_in_one_line(tmp_path, capsys):
    """driver.lock names a live pid that runs another program (the pid was reused): taken over, said once."""
    import json
    import os
    import subprocess
    import sys
    import time

    import psutil

    from hba_sweep.sweep import lock
    from hba_sweep.sweep.status import driver_line

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    while "time.sleep" not in " ".join(psutil.Process(other.pid).cmdline()):  # until exec: the other program runs
        time.sleep(0.02)
    try:
        (tmp_path / "driver.lock").write_text(
            json.dumps(
                {"pid": other.pid, "host": os.uname().nodename, "started": "2026-01-01T00:00:00", "command": "run x"}
            )
        )
        assert "driver: gone" in driver_line(tmp_path, {"runs": [{}]}, lock.read_lock(str(tmp_path)))
        mine = lock.acquire(str(tmp_path))
        err = capsys.readouterr().err
        assert f"pid {other.pid} runs, but not an hba_sweep driver" in err and len(err.strip().splitlines()) == 1
        assert json.loads((tmp_path / "driver.lock").read_text())["pid"] == os.getpid()
        lock.release(str(tmp_path), mine)
    finally:
        other.kill()
        other.wait()


def test_missing_s3_bucket_is_refused_before_ray(demo_dir, tmp_path, capsys, no_ray, monkeypatch):
    from local_cluster import free_ports
    from moto.server import ThreadedMotoServer

    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    port = free_ports(1)[0]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        uri = f"s3://hba:secret@nobucket/sweeps?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
        code = invoke(["run", space_file(demo_dir, tmp_path), "--storage", uri, "--no-dashboard"])
    finally:
        server.stop()
    err = capsys.readouterr().err
    assert code == 2, err
    assert "the bucket 'nobucket' does not exist" in err and "Fix: create it" in err and "secret" not in err, err
