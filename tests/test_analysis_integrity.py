"""The analysis counts only what is distinct, through ``python -m hba_sweep analyze`` on the demo backbone:
one study at a time, a trial run twice is not two seeds, settings that differ within a window separate its
groups, study.json's baseline links are checked against the trials' own records, the evaluation cache is
keyed by file contents, and report.md records the study's identity."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hba_sweep import __version__
from hba_sweep.cli import main
from hba_sweep.foundation.io_utils import file_sha256


@pytest.fixture(scope="module")
def runs(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A baseline (epochs -1..1) and a label_shuffle fork from its epoch 0 (perturbed epoch 1)."""
    from hba_sweep.config import load_config
    from hba_sweep.training import run_training_experiment

    root = tmp_path_factory.mktemp("integrity")
    cfg = load_config(demo_dir / "train.yaml", {"save_path": str(root / "runs"), "epochs": 2, "progress": False})
    base = run_training_experiment(cfg)["run_dir"]
    fork = run_training_experiment(
        cfg.replace(init_from=base, init_epoch=0, perturb_type="label_shuffle", perturb_epoch=1, perturb_length=1)
    )["run_dir"]
    return {"baseline": Path(base), "fork": Path(fork), "evalsets": demo_dir / "evalsets.yaml"}


def copy_run(src: Path, dst: Path, **config) -> Path:
    """A copy of a run folder under another name; ``config`` overrides the settings its meta.json records
    (``inputs`` replaces recorded input digests: role -> sha256)."""
    shutil.copytree(src, dst)
    inputs = config.pop("inputs", {})
    for meta_file in dst.glob("checkpoints/*/meta.json"):
        meta = json.loads(meta_file.read_text())
        meta["config"].update(config, run_name=dst.name)
        meta["run_name"] = dst.name
        for role, digest in inputs.items():
            meta["inputs"][role]["sha256"] = digest
        meta_file.write_text(json.dumps(meta))
    return dst


def study_dir(runs: dict, where: Path, manifest: bool = True) -> Path:
    where.mkdir(parents=True)
    copy_run(runs["baseline"], where / "base")
    copy_run(runs["fork"], where / "fork")
    if manifest:
        trials = {"base": {"role": "baseline"}, "fork": {"role": "perturbed", "baseline": "base"}}
        (where / "study.json").write_text(json.dumps({"trials": trials}))
    return where


def analyze(runs: dict, root: Path, out: Path, *extra: str) -> int:
    argv = ["analyze", str(root), "--datasets", "things", "--evalsets", str(runs["evalsets"]), "--out", str(out)]
    return main([*argv, "--local", *extra])


def test_a_folder_of_several_studies_is_refused_unless_pooled(
    runs: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    parent = tmp_path / "ray_results"
    study_dir(runs, parent / "alpha")
    study_dir(runs, parent / "beta")
    capsys.readouterr()
    assert analyze(runs, parent, tmp_path / "a") == 2
    err = capsys.readouterr().err
    assert "holds 2 studies" in err and "alpha (2 trials)" in err and "beta (2 trials)" in err
    assert f"python -m hba_sweep analyze {parent}/alpha" in err and "--pool-studies" in err
    assert not (tmp_path / "a").exists()
    assert analyze(runs, parent / "alpha", tmp_path / "one") == 0  # one study: as before
    assert len(pd.read_parquet(tmp_path / "one" / "summary.parquet")) == 1
    # pooled knowingly: beta's trials are alpha's run again, not more seeds
    assert analyze(runs, parent, tmp_path / "pooled", "--pool-studies") == 0
    summary = pd.read_parquet(tmp_path / "pooled" / "summary.parquet")
    assert len(summary) == 1
    report = (tmp_path / "pooled" / "report.md").read_text()
    duplicates = report.split("## Duplicate trials")[1].split("\n## ")[0]
    assert duplicates.count("duplicate of") == 2 and "left out" in duplicates


def test_a_trial_run_twice_is_not_two_seeds(runs: dict, tmp_path: Path) -> None:
    root = study_dir(runs, tmp_path / "study", manifest=False)
    copy_run(runs["fork"], root / "fork_again")  # same settings, same inputs: one trial run twice
    assert analyze(runs, root, tmp_path / "a") == 0
    summary = pd.read_parquet(tmp_path / "a" / "summary.parquet")
    assert summary["trial_id"].tolist() == ["fork"]
    windows = pd.read_parquet(tmp_path / "a" / "windows.parquet")
    assert set(windows["n"]) == {1}
    results = pd.read_parquet(tmp_path / "a" / "results.parquet")
    assert "fork_again" not in set(results["trial_id"])
    report = (tmp_path / "a" / "report.md").read_text()
    assert "- fork_again [fork_again]: duplicate of fork [fork]" in report


def test_a_setting_that_differs_within_a_window_separates_its_groups(runs: dict, tmp_path: Path) -> None:
    root = study_dir(runs, tmp_path / "study", manifest=False)
    copy_run(runs["baseline"], root / "base_lr", lr=0.005)
    copy_run(runs["fork"], root / "fork_lr", lr=0.005)
    assert analyze(runs, root, tmp_path / "a") == 0
    summary = pd.read_parquet(tmp_path / "a" / "summary.parquet").set_index("trial_id")
    assert summary.loc["fork", "lr"] == 0.01 and summary.loc["fork_lr", "lr"] == 0.005
    assert summary.loc["fork_lr", "baseline_id"] == "base_lr" and summary.loc["fork", "baseline_id"] == "base"
    windows = pd.read_parquet(tmp_path / "a" / "windows.parquet")
    alignment = windows[windows["measure"] == "max_alignment_deviation"]
    assert sorted(alignment["lr"]) == [0.005, 0.01] and set(alignment["n"]) == {1}  # never averaged together
    report = (tmp_path / "a" / "report.md").read_text()
    table = report.split("## Perturbation windows vs baseline")[1].split("\n## ")[0]
    assert "| perturbation | start epoch | length | lr | seeds |" in table
    assert "| label_shuffle | 1 | 1 | 0.005 | 1 |" in table and "| label_shuffle | 1 | 1 | 0.01 | 1 |" in table
    assert "**label_shuffle (lr=0.005), Δ max alignment**" in report
    assert "separate the groups of a window (columns of `summary.parquet` and `windows.parquet`): lr" in report
    heatmaps = sorted(p.name for p in (tmp_path / "a").glob("heatmap_max_alignment*.png"))
    assert heatmaps == ["heatmap_max_alignment_lr0.005.png", "heatmap_max_alignment_lr0.01.png"]  # one per group


def test_a_hand_edited_baseline_link_is_an_error(runs: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = study_dir(runs, tmp_path / "study")
    copy_run(runs["baseline"], root / "base_lr", lr=0.005)
    copy_run(runs["baseline"], root / "base_rdm", inputs={"behavioral_rdm_file": "0" * 64})
    manifest = json.loads((root / "study.json").read_text())
    assert analyze(runs, root, tmp_path / "ok") == 0  # the link as the study wrote it
    for other, difference in (("base_lr", "lr: 0.005 -> 0.01"), ("base_rdm", "behavioral_rdm_file: content changed")):
        manifest["trials"]["fork"]["baseline"] = other
        (root / "study.json").write_text(json.dumps(manifest))
        capsys.readouterr()
        assert analyze(runs, root, tmp_path / "a") == 2
        err = capsys.readouterr().err
        assert f"trial fork [fork] links baseline {other} [{other}]" in err and difference in err
        assert "Fix: restore study.json" in err and "Traceback" not in err
    assert not (tmp_path / "a").exists()


def test_report_records_the_study_identity(runs: dict, tmp_path: Path) -> None:
    root = study_dir(runs, tmp_path / "study", manifest=False)
    other = {"behavioral_rdm_file": "f" * 64}
    copy_run(runs["baseline"], root / "base_rdm", inputs=other)
    copy_run(runs["fork"], root / "fork_rdm", inputs=other)
    assert analyze(runs, root, tmp_path / "a") == 0
    report = (tmp_path / "a" / "report.md").read_text()
    identity = report.split("## Study identity")[1].split("\n## ")[0]
    config = json.loads(next(runs["fork"].glob("checkpoints/*/meta.json")).read_text())["config"]
    assert "settings shared by all 4 trials: " in identity and f"lr={config['lr']}" in identity
    assert "settings that differ between trials: perturb_epoch" in identity
    train = file_sha256(config["img_annotations_file"])[:12]
    assert f"input `img_annotations_file`: {config['img_annotations_file']}, sha256 {train} (4 trials)" in identity
    assert "**trials were made with different `behavioral_rdm_file` contents**" in identity
    assert f"product version: {__version__} (4 trials)" in identity
    summary = pd.read_parquet(tmp_path / "a" / "summary.parquet").set_index("trial_id")
    assert summary.loc["fork_rdm", "input_behavioral_rdm_file"] == "f" * 12  # a separate group
    assert summary.loc["fork_rdm", "baseline_id"] == "base_rdm"


def test_an_evaluation_file_changed_in_place_is_evaluated_again(
    runs: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Same size, same mtime, other content: the cache is keyed by content, and says which file changed."""
    from hba_sweep.data.evalsets import read_evalsets_yaml
    from hba_sweep.data.rdm_io import load_rdm, save_rdm_mat

    specs = read_evalsets_yaml(runs["evalsets"])
    rdm_file = tmp_path / "RDM48_triplet.mat"
    shutil.copy(specs["things"]["reference_rdms"]["behavior"], rdm_file)
    specs["things"]["reference_rdms"] = {"behavior": str(rdm_file)}
    evalsets = tmp_path / "evalsets.yaml"
    evalsets.write_text(yaml.safe_dump({"things": specs["things"]}))
    root = study_dir(runs, tmp_path / "study")
    mine = {**runs, "evalsets": evalsets}
    out = tmp_path / "a"
    assert analyze(mine, root, out) == 0
    before = pd.read_parquet(out / "results.parquet")
    stat = os.stat(rdm_file)
    rdm = load_rdm(rdm_file)
    save_rdm_mat(rdm_file, "RDM48_triplet", rdm[::-1, ::-1])
    os.utime(rdm_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(rdm_file).st_size == stat.st_size and os.stat(rdm_file).st_mtime_ns == stat.st_mtime_ns
    capsys.readouterr()
    assert analyze(mine, root, out) == 0
    err = capsys.readouterr().err
    assert f"things: {rdm_file} (sha256 " in err and "changed since it was evaluated; its rows are recomputed" in err
    assert "computed 4 checkpoint(s)" in err
    after = pd.read_parquet(out / "results.parquet")
    assert not (before["value"].to_numpy() == after["value"].to_numpy()).all()
    os.utime(rdm_file)  # touched only: nothing to recompute
    capsys.readouterr()
    assert analyze(mine, root, out) == 0
    assert "computed 0 checkpoint(s)" in capsys.readouterr().err
