"""A study's trial folder with `run/` linked elsewhere: `run --resume` is refused before Ray starts."""

from __future__ import annotations

import shutil

import pytest

from hba_sweep import cli

# .ci/run's second step (-m long): a real cluster, storage or tracker end to end
pytestmark = [pytest.mark.slow, pytest.mark.long]

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


def test_damaged_checkpoint_a_trial_resumes_from_is_named_where_it_is_stored(demo_dir, tmp_path, capsys):
    """--resume of an unfinished trial whose last stored checkpoint is damaged: the error names that checkpoint
    in the study (the file to delete or restore), not the trial's temporary local copy."""
    space = tmp_path / "space.py"
    space.write_text(SPACE.format(base=str(demo_dir / "train.yaml")))
    storage = tmp_path / "rr"
    assert invoke(["run", space, "--storage", storage, "--no-dashboard", "--verbose", "0"]) == 0
    root = storage / "contained"
    (trial,) = [p for p in root.iterdir() if (p / "run").is_dir()]
    (trial / "done.json").unlink()
    last = sorted(trial.glob("checkpoint_*"))[-1]
    (last / "state.pt").write_bytes((last / "state.pt").read_bytes()[:-16] + b"0123456789abcdef")

    invoke(["run", space, "--storage", storage, "--resume", "--no-dashboard", "--verbose", "0"])

    errors = "".join(p.read_text() for p in trial.rglob("error.txt"))
    assert f"{last / 'state.pt'}: does not match its recorded hash" in errors, errors[-3000:]
    assert "hba_trial_" not in errors and "replay_" not in errors
