"""Storage faults: a full disk, a read-only folder, unreachable object storage.

Each is an exit-2 message naming the path and the fix, no traceback, no partial file left, and
what was written before stays usable (a full disk mid-run: ``--resume`` continues it). Running
as root, a read-only folder cannot be made with chmod, so the OS errors are injected where the
files are written (``hba_sweep.foundation.io_utils``).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pandas as pd
import pytest
from conftest import write_small_run_config

from hba_sweep import cli
from hba_sweep.foundation import storage
from hba_sweep.foundation.errors import StorageError


def invoke(argv: list) -> int:
    return int(cli.main([str(a) for a in argv]))


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp") or ".tmp" in p.name]


def fail_fsync_under(monkeypatch, marker: str, code: int = errno.ENOSPC) -> None:
    """os.fsync raises ``code`` for files whose path contains ``marker`` (the disk fills there)."""
    real = os.fsync

    def fsync(fd: int) -> None:
        if marker in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(code, os.strerror(code))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_full_disk_mid_run_is_clear_and_resumable(demo_dir, tmp_path, capsys, monkeypatch):
    config, _, _ = write_small_run_config(demo_dir, tmp_path, "full")
    run = tmp_path / "results" / "full"
    fail_fsync_under(monkeypatch, "epoch_0")

    assert invoke(["train", "--config", config, "--set", "epochs=2"]) == 2

    err = capsys.readouterr().err
    assert "no space left on the device" in err and str(run / "checkpoints") in err and "Fix: free space" in err
    assert "--resume" in err and "Traceback" not in err, err
    assert temp_files(tmp_path) == []  # no partial file, no half-written checkpoint folder
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch_-1"]
    monkeypatch.undo()  # space freed

    assert invoke(["train", "--config", config, "--set", "epochs=2", "--resume"]) == 0
    assert pd.read_csv(run / "metrics.csv")["epoch"].tolist() == [-1, 0, 1]


@pytest.mark.parametrize("code,words", [(errno.EROFS, "read-only file system"), (errno.EACCES, "permission denied")])
def test_unwritable_save_path_is_clear(demo_dir, tmp_path, capsys, monkeypatch, code, words):
    config, _, _ = write_small_run_config(demo_dir, tmp_path, "ro")
    fail_fsync_under(monkeypatch, str(tmp_path / "results"), code)

    assert invoke(["train", "--config", config]) == 2

    err = capsys.readouterr().err
    assert words in err and str(tmp_path / "results") in err and "save_path" in err, err
    assert "Traceback" not in err and temp_files(tmp_path) == []


def test_unwritable_analysis_output_is_clear(demo_dir, tmp_path, capsys, monkeypatch):
    config, _, _ = write_small_run_config(demo_dir, tmp_path, "an")
    assert invoke(["train", "--config", config]) == 0
    out = tmp_path / "analysis_out"
    fail_fsync_under(monkeypatch, str(out), errno.EROFS)

    assert (
        invoke(
            [
                "analyze",
                tmp_path / "results" / "an",
                "--evalsets",
                demo_dir / "evalsets.yaml",
                "--datasets",
                "things",
                "--out",
                out,
            ]
        )
        == 2
    )

    err = capsys.readouterr().err
    assert "read-only file system" in err and str(out) in err and "--out" in err and "Traceback" not in err, err
    assert temp_files(out) == []


def test_unreachable_object_storage_is_clear():
    uri = "s3://bucket/exp?endpoint_override=127.0.0.1:9&scheme=http"  # nothing listens on port 9
    with pytest.raises(StorageError, match=r"s3://bucket/exp.*cannot read the storage.*Fix: check the network"):
        storage.exists(uri)


def test_unreachable_storage_while_uploading_the_analysis_is_clear(tmp_path):
    import pyarrow.fs as pafs

    from analysis.analyze import sync

    (tmp_path / "report.md").write_text("x")
    remote = pafs.S3FileSystem(
        endpoint_override="127.0.0.1:9", scheme="http", access_key="AKIAXX", secret_key="SECRETYY", region="us-east-1"
    )
    with pytest.raises(StorageError, match=r"s3://bucket/exp/analysis: cannot upload the analysis.*Fix:") as info:
        sync(remote, str(tmp_path), "bucket/exp/analysis", ["report.md"], download=False)
    assert "SECRETYY" not in str(info.value)
