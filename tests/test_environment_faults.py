"""Environment faults are exit-2 messages with the fix, said before Ray starts where possible."""

from __future__ import annotations

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


def test_storage_naming_a_regular_file_is_refused_before_ray(demo_dir, tmp_path, capsys):
    storage = tmp_path / "results.txt"
    storage.write_text("not a folder")
    code = invoke(["run", space_file(demo_dir, tmp_path), "--storage", storage, "--no-dashboard"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"--storage {storage}" in err and "regular file, not a folder" in err and "Fix:" in err, err
    assert not ray.is_initialized() and storage.read_text() == "not a folder"


def test_storage_under_an_unwritable_parent_is_refused_before_ray(demo_dir, tmp_path, capsys):
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
    code = invoke(["run", space_file(demo_dir, tmp_path), "--storage", tmp_path / "rr", "--no-dashboard",
                   "--verbose", "0"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "TMPDIR is too long for Ray's sockets" in captured.out + captured.err
