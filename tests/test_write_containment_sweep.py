"""A study's trial folder with `run/` linked elsewhere: `run --resume` is refused before Ray starts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hba_sweep import cli

pytestmark = pytest.mark.slow

SPACE = """
NAME = "contained"
BASE_CONFIG = {base!r}
PARAM_SPACE = {{"epochs": 2}}
RESOURCES = {{"cpu": 1}}
MAX_FAILURES = 0
"""


def invoke(argv: list) -> int:
    return int(cli.main([str(a) for a in argv]))


def test_resume_refuses_a_trial_run_folder_linked_elsewhere(demo_dir, tmp_path, capsys):
    space = tmp_path / "space.py"
    space.write_text(SPACE.format(base=str(demo_dir / "train.yaml")))
    storage = tmp_path / "rr"
    assert invoke(["run", space, "--storage", storage, "--no-dashboard", "--verbose", "0"]) == 0
    root = storage / "contained"
    (trial,) = [p for p in root.iterdir() if (p / "run").is_dir()]
    (trial / "done.json").unlink()  # the trial is unfinished again: --resume would train on and copy run files
    elsewhere = tmp_path / "elsewhere"
    shutil.move(trial / "run", elsewhere)
    for f in elsewhere.iterdir():
        f.unlink()
    (trial / "run").symlink_to(elsewhere, target_is_directory=True)
    capsys.readouterr()

    code = invoke(["run", space, "--storage", storage, "--resume", "--no-dashboard", "--verbose", "0"])

    err = capsys.readouterr().err
    assert code == 2, err
    assert str(trial / "run") in err and "symbolic link" in err and "Fix:" in err and "Traceback" not in err
    assert list(elsewhere.iterdir()) == []  # neither metrics.csv nor config.yaml written through the link
