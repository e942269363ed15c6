"""Files and folders the product writes follow the user's umask, like any other tool's output
(0644 / 0755 under umask 022), not tempfile's private 0600 / 0700 (DESIGN trap 9)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hba_sweep.foundation.io_utils import atomic_write_text, temp_dir


@pytest.fixture()
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


def test_atomic_write_and_temp_dir_follow_umask(tmp_path: Path, umask_022) -> None:
    atomic_write_text(tmp_path / "a.txt", "x")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE(temp_dir(".t.", tmp_path).stat().st_mode) == 0o755
    os.umask(0o077)  # a stricter umask is honoured as well
    atomic_write_text(tmp_path / "b.txt", "x")
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o600


def test_run_files_and_checkpoints_0644_under_umask_022(demo_config, tmp_path: Path, umask_022) -> None:
    from hba_sweep.training import run_training_experiment

    summary = run_training_experiment(demo_config(epochs=1, save_path=str(tmp_path / "runs")))
    found = modes(Path(summary["run_dir"]))
    checkpoint_files = [
        name
        for name in found
        if "checkpoints" in name and name.endswith(("adapter.safetensors", "state.pt", "meta.json"))
    ]
    assert len(checkpoint_files) == 6  # epochs -1 and 0
    assert {"metrics.csv", "config.yaml", "split.json"} <= set(found)
    wrong = {
        name: oct(mode)
        for name, mode in found.items()
        if mode != (0o755 if (Path(summary["run_dir"]) / name).is_dir() else 0o644)
    }
    assert not wrong, wrong
