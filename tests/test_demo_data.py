"""Demo data: deterministic, in the published formats, with a real image -> target signal."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import spearmanr

from hba_sweep.cli.command_parsers import add_demo_data_parser
from hba_sweep.data.evalsets import load_nights, read_evalsets_yaml
from hba_sweep.data.rdm_io import load_rdm
from hba_sweep.data.things import ThingsDataset, read_things_csv
from hba_sweep.foundation.errors import DataError
from hba_sweep.training.demo_data import make_demo_data


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return make_demo_data(tmp_path_factory.mktemp("demo") / "d").parent


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generation_is_deterministic(demo, tmp_path):
    again = make_demo_data(tmp_path / "again").parent
    first, second = _files(demo), _files(again)
    assert first.keys() == second.keys()
    assert first["train.csv"] == second["train.csv"] and first["eval48/eval48.csv"] == second["eval48/eval48.csv"]
    assert [k for k in first if first[k] != second[k]] == []
    other = make_demo_data(tmp_path / "seed1", seed=1).parent
    assert (other / "train.csv").read_bytes() != first["train.csv"]


def test_counts_and_formats(demo):
    names, targets = read_things_csv(demo / "train.csv")
    assert len(names) == 480 and targets.shape == (480, 66)
    assert (demo / "train.csv").read_text().startswith(",image_name,0,1,2,")
    assert all((demo / "images" / n).is_file() for n in names)
    eval_names, eval_targets = read_things_csv(demo / "eval48" / "eval48.csv")
    assert len(eval_names) == 48 and not set(eval_names) & set(names)
    with Image.open(demo / "images" / names[0]) as img:
        assert img.size == (64, 64) and img.mode == "RGB"


def test_targets_are_non_negative_on_the_study_scale(demo):
    _, targets = read_things_csv(demo / "train.csv")
    assert targets.min() >= 0 and 2 < targets.mean() < 15 and 20 < targets.max() < 150
    assert np.all(targets.std(axis=0) > 0.01)  # every dimension varies across images


def _ridge_r2(x: np.ndarray, y: np.ndarray, lam: float = 10.0) -> float:
    """Fit ridge on the first half, R^2 on the second half against the first half's mean."""
    half = len(x) // 2
    xb = np.c_[x, np.ones(len(x))]
    w = np.linalg.solve(xb[:half].T @ xb[:half] + lam * np.eye(xb.shape[1]), xb[:half].T @ y[:half])
    residual = ((xb[half:] @ w - y[half:]) ** 2).sum()
    return 1 - residual / ((y[half:] - y[:half].mean(0)) ** 2).sum()


def test_targets_depend_on_the_images(demo):
    ds = ThingsDataset(demo / "train.csv", demo / "images", image_size=64)
    pixels = torch.nn.functional.avg_pool2d(ds.images(slice(None)), 8).flatten(1).double().numpy()
    targets = ds.targets.double().numpy()
    r2 = _ridge_r2(pixels, targets)
    shuffled = _ridge_r2(pixels, targets[np.random.default_rng(0).permutation(len(targets))])
    assert r2 > 0.15, r2  # clearly better than predicting the mean
    assert shuffled < 0.02 < r2 - 0.1, (r2, shuffled)


def test_reference_rdm_reflects_the_targets(demo):
    rdm = load_rdm(demo / "eval48" / "RDM48_triplet.mat", n=48)
    assert np.array_equal(rdm, rdm.T) and np.all(np.diag(rdm) == 0) and rdm.min() >= 0
    _, targets = read_things_csv(demo / "eval48" / "eval48.csv")
    iu = np.triu_indices(48, k=1)
    rho = spearmanr(rdm[iu], (1 - np.corrcoef(targets))[iu])[0]
    assert 0.9 < rho < 1.0  # the targets' geometry plus a little noise


def test_nights_human_choice_is_the_closer_image(demo):
    sets = read_evalsets_yaml(demo / "evalsets.yaml")
    s = load_nights(sets["nights"]["data_csv"], sets["nights"]["img_dir"])
    pix = np.stack([np.asarray(Image.open(p), dtype=np.float64).ravel() for p in s.image_paths])
    d_left = np.linalg.norm(pix[s.ref_idx] - pix[s.left_idx], axis=1)
    d_right = np.linalg.norm(pix[s.ref_idx] - pix[s.right_idx], axis=1)
    assert np.mean((d_right < d_left) == (s.human_choice == 1)) >= 0.75


def test_train_yaml_is_a_valid_config(demo, monkeypatch, tmp_path):
    from hba_sweep.config import load_config

    monkeypatch.chdir(tmp_path)  # data paths resolve relative to the yaml, not the working directory
    cfg = load_config(demo / "train.yaml", check_files=True)
    assert cfg.backbone == "hba-tiny" and cfg.pretrained == "none" and cfg.device == "cpu"
    assert (cfg.vision_layers, cfg.transformer_layers, cfg.rank, cfg.epochs) == (2, 3, 16, 8)
    assert cfg.behavioral_rsa and Path(cfg.behavioral_rdm_file).is_file()
    assert Path(cfg.img_annotations_file) == demo / "train.csv"
    assert Path(cfg.rsa_img_dir) == demo / "eval48" / "images"


def test_infer_yaml_names_the_run_train_yaml_makes(demo, monkeypatch, tmp_path):
    from hba_sweep.config import load_config, run_dir
    from hba_sweep.config.infer_config import load_infer_config

    monkeypatch.chdir(tmp_path)
    cfg = load_infer_config(demo / "infer.yaml")
    assert cfg["model_weights_path"] == str(run_dir(load_config(demo / "train.yaml")))  # relative to where you run
    assert (cfg["dataset"], cfg["evaluation_type"], cfg["epoch"]) == ("things", "behavioral", "all")
    assert Path(cfg["img_dir"]) == demo / "eval48" / "images"
    assert Path(cfg["reference_rdm_paths"]["behavioral_rdm"]) == demo / "eval48" / "RDM48_triplet.mat"


def test_reuse_force_and_refusals(tmp_path):
    out = tmp_path / "d"
    make_demo_data(out, n_train=20)
    marker = (out / "demo.json").stat().st_mtime_ns
    assert make_demo_data(out, n_train=20) == out / "train.yaml"
    assert (out / "demo.json").stat().st_mtime_ns == marker  # reused, not rewritten
    with pytest.raises(DataError, match="other settings.*--force"):
        make_demo_data(out, n_train=30)
    make_demo_data(out, n_train=30, force=True)
    assert json.loads((out / "demo.json").read_text())["n_train"] == 30
    assert len(read_things_csv(out / "train.csv")[0]) == 30
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    for force in (False, True):
        with pytest.raises(DataError, match="holds no demo data"):
            make_demo_data(foreign, n_train=20, force=force)
    assert (foreign / "notes.txt").read_text() == "keep me" and len(list(foreign.iterdir())) == 1
    with pytest.raises(DataError, match="--n-train=3"):
        make_demo_data(tmp_path / "small", n_train=3)
    assert not (tmp_path / "small").exists()


def test_cli_subcommand(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="hba_sweep")
    add_demo_data_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["demo-data", str(tmp_path / "d"), "--n-train", "20", "--seed", "2"])
    assert args.func(args) == 0
    assert "wrote demo data" in capsys.readouterr().out
    assert len(read_things_csv(tmp_path / "d" / "train.csv")[0]) == 20
    args = parser.parse_args(["demo-data", str(tmp_path / "d"), "--n-train", "20", "--seed", "2"])
    assert args.func(args) == 0
    assert "reused existing" in capsys.readouterr().out
    args = parser.parse_args(["demo-data", str(tmp_path / "d"), "--n-train", "20", "--force"])
    assert args.func(args) == 0
    assert "regenerated" in capsys.readouterr().out
