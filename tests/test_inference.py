"""run_inference and ``infer --config`` on a short demo run (CPU, hba-tiny)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from hba_sweep.cli import main
from hba_sweep.training.inference import run_inference


@pytest.fixture(scope="module")
def run(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hba_sweep.config import load_config
    from hba_sweep.training import run_training_experiment

    root = tmp_path_factory.mktemp("infer")
    cfg = load_config(demo_dir / "train.yaml", {"save_path": str(root), "epochs": 2, "progress": False})
    return Path(run_training_experiment(cfg)["run_dir"])


def study_yaml(path: Path, run: Path, demo_dir: Path, **changes) -> Path:
    """An inference YAML with the study's keys; results go next to it."""
    values = {
        "model_weights_path": str(run),
        "epoch": "all",
        "dataset": "things",
        "evaluation_type": "behavioral",
        "img_dir": str(demo_dir / "eval48" / "images"),
        "inference_annotations_file": str(demo_dir / "eval48" / "eval48.csv"),
        "reference_rdm_paths": str(demo_dir / "eval48" / "RDM48_triplet.mat"),
        "model_rdm_distance_metric": "pearson",
        "rsa_similarity_metric": "spearman",
        "reference_rdm_distance_metric": "pearson",
        "max_images_per_category": None,
        "batch_size": 16,
        "inference_save_dir": str(path.parent / "results"),
        "backbone": "hba-tiny",
        "vision_layers": 2,
        "transformer_layers": 3,
        "rank": 16,
        "cuda": 2,
        **changes,  # the published cuda key: 2 = the CPU (-1 = all GPUs)
    }
    path.write_text(yaml.safe_dump(values))
    return path


def test_infer_config_writes_json_per_epoch(run: Path, demo_dir: Path, tmp_path: Path) -> None:
    cfg = study_yaml(tmp_path / "infer.yaml", run, demo_dir)
    assert main(["infer", "--config", str(cfg)]) == 0
    logged = pd.read_csv(run / "metrics.csv").set_index("epoch")["behavioral_rsa_rho"]
    files = sorted((tmp_path / "results").glob("*.json"))
    assert len(files) == 3  # epochs -1, 0, 1
    for f in files:
        data = json.loads(f.read_text())
        assert data["evaluation_type"] == "behavioral" and data["n_images"] == 48
        assert data["results"][0]["metric"] == "rsa_spearman"
        assert abs(data["behavioral_rsa_rho"] - logged[data["epoch"]]) < 1e-6
        assert np.load(tmp_path / "results" / data["predictions_file"]).shape == (48, 66)


def test_run_inference_one_epoch(run: Path, demo_dir: Path, tmp_path: Path) -> None:
    cfg = yaml.safe_load(study_yaml(tmp_path / "i.yaml", run, demo_dir, epoch=0).read_text())
    result = run_inference(cfg)
    assert result["epoch"] == 0 and result["predictions"].shape == (48, 66)
    assert -1 <= result["behavioral_rsa_rho"] <= 1


@pytest.mark.parametrize(
    "changes, metrics",
    [
        (
            {
                "dataset": "nod",
                "evaluation_type": "neural",
                "img_dir": "nod/images",
                "inference_annotations_file": "nod/index.csv",
                "max_images_per_category": 2,
                "reference_rdm_paths": {"V1": "nod/rdm_V1.mat", "IT": "nod/rdm_IT.mat"},
            },
            {("V1", "rsa_spearman"), ("IT", "rsa_spearman")},
        ),
        (
            {
                "dataset": "things_fmri",
                "evaluation_type": "neural",
                "img_dir": "things_fmri/images",
                "inference_annotations_file": "things_fmri/stimulus_metadata.csv",
                "reference_rdm_paths": ["things_fmri/rdm_V1.mat"],
            },
            {("rdm_V1", "rsa_spearman")},
        ),
        (
            {
                "dataset": "nights",
                "evaluation_type": "triplet",
                "img_dir": "nights",
                "inference_annotations_file": "nights/data.csv",
                "reference_rdm_paths": None,
            },
            {("test", "2afc_accuracy")},
        ),  # the published evaluation's split
        (
            {
                "dataset": "nights",
                "evaluation_type": "triplet",
                "img_dir": "nights",
                "inference_annotations_file": "nights/data.csv",
                "reference_rdm_paths": None,
                "split": "all",
            },
            {("all", "2afc_accuracy")},
        ),
        ({"evaluation_type": "cka", "reference_rdm_paths": None}, {("targets", "cka"), ("targets", "cka_unbiased")}),
    ],
)
def test_infer_other_evaluation_types(run: Path, demo_dir: Path, tmp_path: Path, changes: dict, metrics: set) -> None:
    changes = {
        k: (str(demo_dir / v) if k in ("img_dir", "inference_annotations_file") else v) for k, v in changes.items()
    }
    if isinstance(changes.get("reference_rdm_paths"), dict):
        changes["reference_rdm_paths"] = {k: str(demo_dir / v) for k, v in changes["reference_rdm_paths"].items()}
    elif isinstance(changes.get("reference_rdm_paths"), list):
        changes["reference_rdm_paths"] = [str(demo_dir / v) for v in changes["reference_rdm_paths"]]
    cfg = yaml.safe_load(study_yaml(tmp_path / "i.yaml", run, demo_dir, epoch=1, **changes).read_text())
    result = run_inference(cfg)
    assert {(r["reference"], r["metric"]) for r in result["results"]} == metrics
    assert all(np.isfinite(r["value"]) for r in result["results"])


def test_infer_bad_config_exit_2(run: Path, demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pickled = tmp_path / "weights.pt"
    pickled.write_bytes(b"\x80\x04")
    cases = [
        ({"evaluation_typo": "behavioral"}, "evaluation_typo"),
        ({"evaluation_type": "telepathy"}, "evaluation_type"),
        ({"model_weights_path": str(pickled)}, "pickle"),
        ({"epoch": 7}, "epoch 7"),
        ({"rank": 8}, "rank"),
        ({"annotations_file": "other.csv"}, "annotations_file"),
    ]
    capsys.readouterr()
    for changes, needle in cases:
        cfg = study_yaml(tmp_path / "bad.yaml", run, demo_dir, **changes)
        assert main(["infer", "--config", str(cfg)]) == 2, changes
        err = capsys.readouterr().err
        assert err.startswith("error:") and needle in err and "Traceback" not in err, err
    assert not (tmp_path / "results").exists()


def test_relative_paths_resolve_next_to_the_yaml_first(
    run: Path, demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As for training configs: a relative path present next to the YAML wins over one in the working dir."""
    import shutil

    from hba_sweep.config.infer_config import load_infer_config

    here, cwd = tmp_path / "study", tmp_path / "cwd"
    for folder in (here, cwd):
        (folder / "eval").mkdir(parents=True)
        shutil.copy(demo_dir / "eval48" / "eval48.csv", folder / "eval" / "eval48.csv")
    monkeypatch.chdir(cwd)
    cfg = load_infer_config(
        study_yaml(here / "infer.yaml", run, demo_dir, inference_annotations_file="eval/eval48.csv")
    )
    assert cfg["annotations_file"] == str(here / "eval" / "eval48.csv")
