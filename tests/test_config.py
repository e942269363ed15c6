"""Config: study keys accepted, bad values rejected with the key and the fix, before any model."""

from __future__ import annotations

import pytest

from hba_sweep.cli import main
from hba_sweep.config import from_dict, load_config, parse_overrides, run_name
from hba_sweep.foundation.errors import ConfigError
from hba_sweep.foundation.yaml_io import read_yaml


def base(demo_dir) -> dict:
    return read_yaml(demo_dir / "train.yaml") | {
        k: str(demo_dir / v)
        for k, v in read_yaml(demo_dir / "train.yaml").items()
        if k in ("img_dir", "img_annotations_file", "rsa_annotations_file", "rsa_img_dir", "behavioral_rdm_file")
    }


BAD = [
    ({"vision_layer": 2}, "vision_layer", "did you mean 'vision_layers'"),
    ({"learning_rate": 0.1}, "learning_rate", "remove it"),
    ({"rank": 0}, "rank", "at least 1"),
    ({"rank": "eight"}, "rank", "integer"),
    ({"epochs": 2.5}, "epochs", "integer"),
    ({"lr": -1}, "lr", "positive"),
    ({"lr": float("nan")}, "lr", "finite"),
    ({"opt": "adam"}, "opt", "adamw"),
    ({"lr_scheduler": "step"}, "lr_scheduler", "cosine"),
    ({"vision_layers": 99}, "vision_layers", "at most 4"),
    ({"transformer_layers": 7}, "transformer_layers", "at most 3"),
    ({"perturb_type": "shuffle_everything"}, "perturb_type", "label_shuffle"),
    (
        {"perturb_type": "label_shuffle", "perturb_epoch": 7, "perturb_length": 2},
        "perturb_epoch",
        "past the last epoch",
    ),
    ({"perturb_type": "image_noise", "perturb_length": 0}, "perturb_length", "at least 1"),
    ({"perturb_fraction": 0}, "perturb_fraction", "(0, 1]"),
    ({"train_portion": 1.5}, "train_portion", "between 0 and 1"),
    ({"img_annotations_file": "/nope/train.csv"}, "img_annotations_file", "no such file"),
    ({"img_dir": "/nope/images"}, "img_dir", "no such directory"),
    ({"behavioral_rdm_file": None}, "behavioral_rdm_file", "behavioral_rsa: false"),
    ({"backbone": "ViT-Q/99"}, "backbone", "unknown backbone"),
    ({"init_from": "/somewhere"}, "init_from", "together"),
    ({"dora_dropout": 1.0}, "dora_dropout", "[0, 1)"),
    ({"behavioral_rsa": "maybe"}, "behavioral_rsa", "true or false"),
    ({"device": "tpu"}, "device", "cuda"),
]


@pytest.mark.parametrize("change,key,fix", BAD, ids=[b[1] + "-" + str(i) for i, b in enumerate(BAD)])
def test_bad_config_names_key_and_fix(demo_dir, change, key, fix):
    with pytest.raises(ConfigError) as err:
        from_dict(base(demo_dir) | change, source="study.yaml")
    message = str(err.value)
    assert "study.yaml" in message and key in message and "Fix:" in message and fix in message


def test_all_problems_listed_at_once(demo_dir):
    with pytest.raises(ConfigError) as err:
        from_dict(base(demo_dir) | {"rank": 0, "lr": -1, "opt": "adam"}, source="x.yaml")
    assert all(k in str(err.value) for k in ("rank", "lr", "opt"))


def test_study_aliases_and_values(demo_dir):
    study = {k: v for k, v in base(demo_dir).items() if k not in ("backbone", "epochs", "device", "save_path")}
    cfg = from_dict(
        study
        | {
            "clip_hba_backbone": "hba-tiny",
            "max_duration": 7,
            "cuda": -1,
            "checkpoint_path": "/tmp/x",
            "criterion": "MSELoss",
        }
    )
    # the published cuda key: -1 all GPUs (here: cuda), 1 GPU 1, 2 the CPU; no GPU: the CPU, with one log line
    assert (cfg.backbone, cfg.epochs, cfg.device, cfg.save_path, cfg.criterion) == (
        "hba-tiny",
        7,
        "cuda",
        "/tmp/x",
        "mse",
    )
    assert cfg.cpu_fallback
    assert from_dict(study | {"cuda": 1}, check_files=False).device == "cuda:1"
    assert from_dict(study | {"cuda": 2}, check_files=False).device == "cpu"


def test_relative_paths_resolve_against_the_yaml(demo_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(demo_dir / "train.yaml", ["epochs=6", "perturb_type=label_shuffle", "perturb_epoch=1"])
    assert cfg.epochs == 6 and cfg.perturb_type == "label_shuffle" and cfg.img_dir.startswith(str(demo_dir))


def test_overrides_parse_yaml_scalars():
    assert parse_overrides(["lr=0.001", "behavioral_rsa=false", "run_name=abc"]) == {
        "lr": 0.001,
        "behavioral_rsa": False,
        "run_name": "abc",
    }
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["epochs"])


def test_run_names_read_as_the_design(demo_dir):
    cfg = load_config(
        demo_dir / "train.yaml", {"perturb_type": "label_shuffle", "perturb_epoch": 1, "perturb_length": 2}
    )
    assert run_name(cfg) == "cliphba_dora_hba-tiny_r16_v2_t3_seed1_label_shuffle_e1_l2_ps42"
    assert run_name(cfg.replace(perturb_type="none")).endswith("_baseline")


def test_cli_prints_the_problem_without_traceback(demo_dir, capsys):
    code = main(["train", "--config", str(demo_dir / "train.yaml"), "--set", "rank=0"])
    err = capsys.readouterr().err
    assert code == 2 and "rank=0" in err and "Traceback" not in err
