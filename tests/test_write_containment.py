"""Writes stay inside the study (or save_path): a symlinked folder on the way is refused, naming the link.

Each case is generated here (links to a folder outside) and run through the CLI: exit 2, a message naming
the link and a `Fix:`, and nothing written at the link's target.
"""

from __future__ import annotations

from pathlib import Path

from conftest import write_small_run_config

from hba_sweep import cli


def invoke(argv: list) -> int:
    return int(cli.main([str(a) for a in argv]))


def trained_run(demo_dir: Path, tmp_path: Path, name: str = "an") -> Path:
    config, _, _ = write_small_run_config(demo_dir, tmp_path, name)
    assert invoke(["train", "--config", config]) == 0
    return tmp_path / "results" / name


def test_analysis_folder_linked_elsewhere_is_refused(demo_dir, tmp_path, capsys):
    run = trained_run(demo_dir, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run / "analysis").symlink_to(elsewhere, target_is_directory=True)
    capsys.readouterr()

    code = invoke(["analyze", run, "--evalsets", demo_dir / "evalsets.yaml", "--datasets", "things"])

    err = capsys.readouterr().err
    assert code == 2, err
    assert str(run / "analysis") in err and "symbolic link" in err and "Fix:" in err and "Traceback" not in err
    assert list(elsewhere.iterdir()) == []  # no report.md, parquet, figure or prefix cache there


def test_run_folder_linked_elsewhere_is_refused_by_train_resume(demo_dir, tmp_path, capsys):
    config, _, _ = write_small_run_config(demo_dir, tmp_path, "linked")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "linked").symlink_to(elsewhere, target_is_directory=True)

    code = invoke(["train", "--config", config, "--resume"])

    err = capsys.readouterr().err
    assert code == 2, err
    assert str(tmp_path / "results" / "linked") in err and "symbolic link" in err and "Fix:" in err
    assert list(elsewhere.iterdir()) == []


def test_links_of_other_tools_in_a_study_are_not_refused(tmp_path):
    """W&B keeps its own `latest-run` link in <study>/wandb/ (a W&B study must resume); a trial's
    linked run/ folder is still found."""
    from hba_sweep.foundation.safe_paths import links_below

    study = tmp_path / "study"
    (study / "wandb" / "offline-run-1").mkdir(parents=True)
    (study / "wandb" / "latest-run").symlink_to(study / "wandb" / "offline-run-1")
    (study / "trial_a").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (study / "trial_a" / "run").symlink_to(elsewhere)
    assert links_below(study) == [str(study / "trial_a" / "run")]
