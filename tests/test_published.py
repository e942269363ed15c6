"""The published formats: configs accepted as they are, run folders read, split/shuffle/schedule as published."""

from __future__ import annotations

import csv
import json
import math
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import write_small_run_config
from torch.utils.data import DataLoader, Subset, random_split

from hba_sweep.artifacts import published
from hba_sweep.cli import main
from hba_sweep.config import from_dict, load_config, run_dir
from hba_sweep.foundation.errors import CheckpointError, ConfigError, DataError
from hba_sweep.training.loop import run_training_experiment
from hba_sweep.training.run import make_scheduler
from hba_sweep.training.split import draw_split, epoch_order


def published_config_copy(reference_data: Path, demo_dir: Path, dest: Path, save_path: Path) -> Path:
    """The published training_config.yaml with only its paths replaced (text substitution)."""
    things = yaml.safe_load((demo_dir / "evalsets.yaml").read_text())["things"]
    train_cfg = yaml.safe_load((demo_dir / "train.yaml").read_text())
    paths = {
        "save_path": save_path,
        "img_dir": demo_dir / train_cfg["img_dir"],
        "img_annotations_file": demo_dir / train_cfg["img_annotations_file"],
        "baseline_checkpoint_path": dest.parent / "no_baseline",
        "rsa_annotations_file": demo_dir / things["annotations_file"],
        "behavioral_rdm48_file": demo_dir / things["reference_rdms"]["behavior"],
        "rsa_things_img_dir": demo_dir / things["img_dir"],
    }
    text = (reference_data / "published-configs" / "training_config.yaml").read_text()
    for key, value in paths.items():
        text, n = re.subn(rf'^({key}:\s*)"[^"]*"', rf'\g<1>"{value}"', text, flags=re.M)
        assert n == 1, key
    dest.write_text(text)
    return dest


def test_published_training_config_trains_unchanged_but_its_paths(reference_data, demo_dir, tmp_path, capsys):
    config = published_config_copy(reference_data, demo_dir, tmp_path / "training_config.yaml", tmp_path / "runs")
    # the backbone (ViT-L/14 with OpenAI weights) cannot be downloaded here: a tiny one for the test
    code = main(
        [
            "train",
            "--config",
            str(config),
            "--set",
            "clip_hba_backbone=hba-tiny",
            "--set",
            "pretrained=none",
            "--set",
            "max_duration=1",
            "--set",
            "run_name=published",
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert "debug_logging" in err and "logger" in err and "ignored" in err  # reported once, not refused
    assert err.count("published keys with no effect") == 1
    assert "no such GPU: running on the CPU" in err or torch.cuda.is_available()  # cuda: 1 falls back
    saved = yaml.safe_load((tmp_path / "runs" / "published" / "config.yaml").read_text())
    assert saved["lr"] == 1e-4 and saved["opt"] == "adamw" and saved["early_stopping_patience"] == 20
    assert saved["batch_size"] == 64 and saved["weight_decay"] == 0.0 and saved["precision"] == "fp32"
    assert saved["perturb_epoch"] == 0 and saved["perturb_seed"] == 42  # empty = unset = defaults
    with open(tmp_path / "runs" / "published" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["-1", "0"]
    for key in ("behavioral_rsa_rho", "target_rsa_rho", "target_rsa_p"):
        assert math.isfinite(float(rows[-1][key]))


def test_published_keys_checked_and_unknown_keys_still_refused():
    base = {
        "training_mode": "finetune",
        "architecture": "CLIP-HBA",
        "wandb_project": "",
        "wandb_entity": None,
        "perturb_epoch": None,
        "perturb_length": None,
        "perturb_seed": None,
        "opt": "AdamW",
        "criterion": "MSELoss",
        "lr_scheduler": "cosineannealinglrwithwarmup",
        "lr_warmup_duration": "5ep",
        "max_duration": "30ep",
        "cuda": -1,
        "behavioral_rsa": False,
    }
    notes: list[str] = []
    cfg = from_dict({**base, "debug_logging": True, "logger": "None"}, "x.yaml", check_files=False, notes=notes)
    assert (cfg.opt, cfg.criterion, cfg.lr_warmup_epochs, cfg.epochs) == ("adamw", "mse", 5, 30)
    assert cfg.wandb_project is None and cfg.device == "cuda" and cfg.cpu_fallback
    assert len(notes) == 1 and "debug_logging" in notes[0]
    assert from_dict({**base, "cuda": 1}, check_files=False).device == "cuda:1"
    assert from_dict({**base, "cuda": 2}, check_files=False).device == "cpu"  # "2 for CPU"
    assert from_dict({**base, "wandb_project": "p", "wandb_entity": "me"}, check_files=False).wandb_project == "p"
    with pytest.raises(ConfigError, match=r"training_mode='scratch' is not supported.*Fix: set training_mode"):
        from_dict({**base, "training_mode": "scratch"}, "x.yaml", check_files=False)
    with pytest.raises(ConfigError, match="architecture='RN50' is not supported"):
        from_dict({**base, "architecture": "RN50"}, check_files=False)
    with pytest.raises(ConfigError, match="unknown key 'learning_rte'"):
        from_dict({**base, "learning_rte": 1}, check_files=False)


def test_published_schedulers_follow_their_formulas():
    """CosineAnnealingLR(T_max=epochs); warm-up: LinearLR(1e-6 -> 1 over w) then cosine over epochs - w."""
    epochs, warm, base_lr = 12, 4, 1e-3
    for name, w in (("cosineannealinglr", 0), ("cosineannealinglrwithwarmup", warm)):
        cfg = from_dict(
            {"lr_scheduler": name, "lr_warmup_epochs": warm, "epochs": epochs, "lr": base_lr, "behavioral_rsa": False},
            check_files=False,
        )
        optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
        scheduler = make_scheduler(cfg, optimizer)
        for epoch in range(epochs):
            if epoch < w:
                want = base_lr * (1e-6 + (1 - 1e-6) * epoch / w)
            else:
                want = base_lr * 0.5 * (1 + math.cos(math.pi * (epoch - w) / (epochs - w)))
            assert optimizer.param_groups[0]["lr"] == pytest.approx(want, rel=1e-6, abs=1e-12), (name, epoch)
            optimizer.step()
            scheduler.step()


def test_split_is_the_published_random_split():
    for n, seed in ((1806, 1), (50, 7)):
        torch.manual_seed(seed)  # the published seed_everything, then random_split on the global generator
        n_train = int(0.8 * n)
        want_train, want_val = random_split(range(n), [n_train, n - n_train])
        train, val = draw_split(n, 0.8, seed)
        assert train == list(want_train.indices) and val == list(want_val.indices)
    assert tuple(map(len, draw_split(1806, 0.8, 1))) == (1444, 362)


def test_epoch_order_is_the_published_dataloaders():
    data = Subset(list(range(100)), [int(i) for i in torch.randperm(100)[:37]])
    loader_gen, ours = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    loader = DataLoader(data, batch_size=8, shuffle=True, generator=loader_gen)
    for _ in range(3):
        seen = [int(x) for batch in loader for x in batch]
        assert seen == [data[i] for i in epoch_order(len(data), ours).tolist()]
    assert torch.equal(loader_gen.get_state(), ours.get_state())


def test_training_res_reader_maps_both_published_numberings(reference_data, tmp_path):
    rows = published.read_training_res(reference_data / "baseline_training_res_seed1.csv")
    assert rows[0]["epoch"] == 0 and rows[0]["val_loss"] == pytest.approx(114.26733727218038)  # CSV epoch 1
    assert rows[-1]["epoch"] == 117 and rows[0]["behavioral_rsa_p"] == pytest.approx(7.497325421633319e-59)
    current = tmp_path / "training_res.csv"
    current.write_text("epoch,train_loss,test_loss,rsa_behavioral_corr,rsa_behavioral_p\n0,5,4,0.5,0.01\n1,3,2,,\n")
    rows = published.read_training_res(current)
    assert [r["epoch"] for r in rows] == [0, 1] and rows[0]["behavioral_rsa_rho"] == 0.5
    assert math.isnan(rows[1]["behavioral_rsa_rho"])
    current.write_text("epoch,loss\n0,1\n")
    with pytest.raises(DataError, match="not a published training_res.csv"):
        published.read_training_res(current)


class Gadget:  # a pickled object: loading it would need to run code
    pass


def test_published_files_are_read_without_running_code(tmp_path):
    folder = tmp_path / "run" / "dora_params"
    folder.mkdir(parents=True)
    tensors = {"clip_model.visual.transformer.resblocks.1.attn.out_proj.m": torch.ones(4)}
    torch.save(tensors, folder / "epoch3_dora_params.pth")
    run = published.PublishedRun.open(tmp_path / "run")
    assert run.epochs() == [3] and torch.equal(run.adapters(3)[next(iter(tensors))], torch.ones(4))
    with pytest.raises(CheckpointError, match="epoch 4.*epochs 3..3"):
        run.adapters(4)
    with open(folder / "epoch5_dora_params.pth", "wb") as fh:
        pickle.dump({"x": Gadget()}, fh)
    with pytest.raises(CheckpointError, match="nothing in it was executed"):
        run.adapters(5)
    states = tmp_path / "run" / "random_states"
    states.mkdir()
    torch.save(
        {"train_indices": [2, 0], "test_indices": [1], "random_seed": 1, "train_portion": 0.8},
        states / "dataset_split_indices.pth",
    )
    assert run.split() == {"train": [2, 0], "val": [1]}


@pytest.fixture()
def small(demo_dir, tmp_path):
    config, _, csv_path = write_small_run_config(demo_dir, tmp_path, "small")

    def make(**changes):
        return load_config(config, {"behavioral_rsa": False, **changes})

    return make, csv_path


def test_split_file_pins_the_validation_images(small, tmp_path):
    make, csv_path = small
    names = [r["image_name"] for r in csv.DictReader(open(csv_path))]
    pinned = tmp_path / "val.json"
    pinned.write_text(json.dumps(names[:5]))
    cfg = make(split_file=str(pinned), run_name="pinned")
    run_training_experiment(cfg)
    split = json.loads((run_dir(cfg) / "split.json").read_text())
    assert split["val"] == names[:5] and sorted(split["train"]) == sorted(names[5:])
    torch.save({"train_indices": [3, 1, 2], "test_indices": [0, 4]}, tmp_path / "dataset_split_indices.pth")
    cfg = make(split_file=str(tmp_path / "dataset_split_indices.pth"), run_name="pinned_pth")
    run_training_experiment(cfg)
    split = json.loads((run_dir(cfg) / "split.json").read_text())
    assert split["train"] == [names[i] for i in (3, 1, 2)] and split["val"] == [names[0], names[4]]
    pinned.write_text(json.dumps(["no_such_image.jpg"]))
    with pytest.raises(ConfigError, match="no_such_image.jpg"):
        run_training_experiment(make(split_file=str(pinned), run_name="bad"))


def reorder_csv(path: Path, seed: int = 0) -> None:
    lines = path.read_text().splitlines(keepends=True)
    body = lines[1:]
    np.random.default_rng(seed).shuffle(body)
    path.write_text(lines[0] + "".join(body))


def test_split_is_checked_by_image_name_on_resume(small):
    make, csv_path = small
    cfg = make(run_name="named", epochs=1)
    run_training_experiment(cfg)
    recorded = json.loads((run_dir(cfg) / "split.json").read_text())
    reorder_csv(csv_path)  # the same images in another order: the same split, by name
    run_training_experiment(make(run_name="named", epochs=2, resume_from=str(run_dir(cfg))))
    assert json.loads((run_dir(cfg) / "split.json").read_text()) == recorded
    lines = csv_path.read_text().splitlines(keepends=True)
    row = next(i for i, line in enumerate(lines) if recorded["val"][0] in line)
    cells = lines[row].rstrip("\n").split(",")
    cells[-1] = str(float(cells[-1]) + 1.0)  # one target value edited
    lines[row] = ",".join(cells) + "\n"
    csv_path.write_text("".join(lines))
    with pytest.raises(DataError, match=f"targets of 1 image.*{re.escape(recorded['val'][0])}"):
        run_training_experiment(make(run_name="named", epochs=3, resume_from=str(run_dir(cfg))))
    del lines[row]
    csv_path.write_text("".join(lines))
    with pytest.raises(DataError, match=f"no longer in the annotation file.*{re.escape(recorded['val'][0])}"):
        run_training_experiment(make(run_name="named", epochs=3, resume_from=str(run_dir(cfg))))
    assert json.loads((run_dir(cfg) / "split.json").read_text()) == recorded  # kept as evidence


def test_random_target_stats_cover_every_target_of_the_file(small, monkeypatch):
    from hba_sweep.data.things import read_things_csv
    from hba_sweep.training import run_inputs

    make, csv_path = small
    seen = {}
    real = run_inputs.choose_perturbation_strategy

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(run_inputs, "choose_perturbation_strategy", spy)
    run_training_experiment(make(run_name="rt", epochs=1, perturb_type="random_target", perturb_length=1))
    _, targets = read_things_csv(csv_path)
    assert seen["target_mean"] == pytest.approx(float(np.mean(targets)), rel=1e-6)
    assert seen["target_std"] == pytest.approx(float(np.std(targets)), rel=1e-6)


def test_both_behavioural_rsa_references_every_epoch(small, tmp_path):
    """behavioral_rsa_* against the triplet RDM, target_rsa_* against 1 - Pearson of the RSA images'
    own targets; the oracle predicts with the plain (uncached) model from the saved adapters."""
    from scipy.stats import spearmanr

    from hba_sweep.artifacts import checkpoint as ckpt
    from hba_sweep.data.rdm_io import load_rdm
    from hba_sweep.data.things import ThingsDataset
    from hba_sweep.model import CLIPHBA

    make, _ = small
    n = len(ThingsDataset(make().rsa_annotations_file, make().rsa_img_dir, 8, in_memory=False))
    rng = np.random.default_rng(0)
    square = np.zeros((n, n))
    square[np.triu_indices(n, 1)] = rng.random(n * (n - 1) // 2)  # a triplet RDM unlike the targets' RDM
    np.save(tmp_path / "rdm.npy", square + square.T)
    cfg = make(run_name="rsa", epochs=1, behavioral_rsa=True, behavioral_rdm_file=str(tmp_path / "rdm.npy"))
    run_training_experiment(cfg)
    with open(run_dir(cfg) / "metrics.csv") as fh:
        row = list(csv.DictReader(fh))[-1]
    model = CLIPHBA(
        backbone=cfg.backbone,
        pretrained=cfg.pretrained,
        vision_layers=cfg.vision_layers,
        transformer_layers=cfg.transformer_layers,
        rank=cfg.rank,
        dora_alpha=cfg.alpha,
        dora_dropout=cfg.dora_dropout,
        adapter=cfg.adapter,
    ).eval()
    model.load_adapter_state_dict(ckpt.load_adapters(ckpt.epoch_dir(run_dir(cfg), 0)))
    images = ThingsDataset(cfg.rsa_annotations_file, cfg.rsa_img_dir, model.image_size)
    with torch.no_grad():
        preds = model(images.images(list(range(len(images))))).double().numpy()
    upper = np.triu_indices(len(images), k=1)
    model_rdm = (1 - np.corrcoef(preds))[upper]
    targets_rdm = (1 - np.corrcoef(images.targets.double().numpy()))[upper]
    triplet = load_rdm(cfg.behavioral_rdm_file, n=len(images))[upper]
    for prefix, reference in (("behavioral", triplet), ("target", targets_rdm)):
        rho, p = spearmanr(model_rdm, reference)
        assert float(row[f"{prefix}_rsa_rho"]) == pytest.approx(rho, abs=1e-4)
        assert float(row[f"{prefix}_rsa_p"]) == pytest.approx(p, rel=1e-2)


def test_published_inference_config_runs_unchanged_but_its_paths(reference_data, demo_dir, tmp_path, capsys):
    config, _, _ = write_small_run_config(demo_dir, tmp_path, "hba")  # the published layout: v2 t1 r32
    cfg = load_config(config, {"behavioral_rsa": False, "epochs": 2, "transformer_layers": 1, "rank": 32})
    run_training_experiment(cfg)
    things = yaml.safe_load((demo_dir / "evalsets.yaml").read_text())["things"]
    paths = {
        "img_dir": demo_dir / things["img_dir"],
        "inference_annotations_file": demo_dir / things["annotations_file"],
        "inference_save_dir": tmp_path / "inference",
        "model_weights_path": run_dir(cfg),
    }
    text = (reference_data / "published-configs" / "inference_config.yaml").read_text()
    for key, value in paths.items():
        text, n = re.subn(rf'^({key}:\s*)"[^"]*"', rf'\g<1>"{value}"', text, flags=re.M)
        assert n == 1, key
    rdm = demo_dir / things["reference_rdms"]["behavior"]
    text, n = re.subn(r'("behavioral_rdm":\s*)"[^"]*"', rf'\g<1>"{rdm}"', text)
    assert n == 1
    (tmp_path / "inference_config.yaml").write_text(text)
    code = main(
        [
            "infer",
            "--config",
            str(tmp_path / "inference_config.yaml"),
            "--set",
            "backbone=hba-tiny",
            "--set",
            "pretrained=none",
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert "load_hba" in err and "cka_unbiased" in err and "ignored" in err
    result = json.loads(next((tmp_path / "inference").glob("*_epoch1_things_behavioral.json")).read_text())
    assert result["epoch"] == 1 and result["results"][0]["reference"] == "behavioral_rdm"
    assert math.isfinite(result["results"][0]["value"])
    text = text.replace("load_hba: true", "load_hba: false")
    (tmp_path / "inference_config.yaml").write_text(text)
    assert main(["infer", "--config", str(tmp_path / "inference_config.yaml")]) == 2
    assert "load_hba=false" in capsys.readouterr().err


def write_published_run(run: Path, dest: Path, epochs: list[int]) -> Path:
    """Our run rewritten in the published trainer's formats: dora_params/, training_res.csv (current,
    0-based writer), random_states/dataset_split_indices.pth (row numbers of the annotation CSV)."""
    from hba_sweep.artifacts import checkpoint as ckpt
    from hba_sweep.model.adapters import to_published_keys

    (dest / "dora_params").mkdir(parents=True)
    for e in epochs:
        torch.save(
            to_published_keys(ckpt.load_adapters(ckpt.epoch_dir(run, e))),
            dest / "dora_params" / f"epoch{e}_dora_params.pth",
        )
    with open(run / "metrics.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if 0 <= int(r["epoch"]) <= max(epochs)]
    lines = ["epoch,train_loss,test_loss,rsa_behavioral_corr,rsa_behavioral_p"]
    lines += [
        f"{r['epoch']},{r['train_loss']},{r['val_loss']},{r['behavioral_rsa_rho']},{r['behavioral_rsa_p']}"
        for r in rows
    ]
    (dest / "training_res.csv").write_text("\n".join(lines) + "\n")
    split = json.loads((run / "split.json").read_text())
    (dest / "random_states").mkdir()
    torch.save(
        {
            "train_indices": split["train_indices"],
            "test_indices": split["val_indices"],
            "random_seed": 1,
            "train_portion": 0.8,
        },
        dest / "random_states" / "dataset_split_indices.pth",
    )
    return dest


def test_fork_from_a_published_run_folder_restores_what_it_holds(small, tmp_path):
    """baseline_checkpoint_path = a published folder: the adapters, split, LR schedule and shuffle order
    of epoch e are restored (checked against our own baseline's state there); AdamW starts fresh."""
    from hba_sweep.artifacts import checkpoint as ckpt

    make, _ = small
    base = make(run_name="base", epochs=3, lr_scheduler="cosineannealinglr")
    run_training_experiment(base)
    folder = write_published_run(run_dir(base), tmp_path / "published_base", [0, 1])
    fork = make(
        run_name="fork",
        epochs=3,
        lr_scheduler="cosineannealinglr",
        perturb_type="label_shuffle",
        perturb_epoch=2,
        perturb_length=1,
        baseline_checkpoint_path=str(folder),
    )
    summary = run_training_experiment(fork)
    assert summary["window_completed"] is True and summary["epoch"] == 2
    rows = {int(r["epoch"]): r for r in csv.DictReader(open(run_dir(fork) / "metrics.csv"))}
    base_rows = {int(r["epoch"]): r for r in csv.DictReader(open(run_dir(base) / "metrics.csv"))}
    assert rows[1]["inherited"] == "True" and float(rows[1]["val_loss"]) == pytest.approx(
        float(base_rows[1]["val_loss"])
    )
    meta = ckpt.read_meta(ckpt.epoch_dir(run_dir(fork), 2))
    assert meta["start"] == "forked_published"
    assert meta["fork_start_val_loss"] == pytest.approx(float(base_rows[1]["val_loss"]), rel=1e-6)  # adapters
    _, ours, _ = ckpt.load_checkpoint(ckpt.epoch_dir(run_dir(base), 1))
    _, forked, _ = ckpt.load_checkpoint(ckpt.epoch_dir(run_dir(fork), 2))
    assert forked.train_names == ours.train_names and forked.val_names == ours.val_names  # the published split
    assert float(rows[2]["lr"]) == pytest.approx(float(base_rows[2]["lr"]))  # the schedule, advanced
    # the shuffle order: the fork's generator after epoch 2 equals the baseline's after epoch 2
    _, base2, _ = ckpt.load_checkpoint(ckpt.epoch_dir(run_dir(base), 2))
    assert torch.equal(forked.shuffle_generator, base2.shuffle_generator)
    with pytest.raises(CheckpointError, match="never trained from scratch"):
        run_training_experiment(
            make(
                run_name="late",
                epochs=4,
                perturb_type="label_shuffle",
                perturb_epoch=3,
                perturb_length=1,
                baseline_checkpoint_path=str(folder),
            )
        )
    with pytest.raises(ConfigError, match="does not record its early-stopping counter"):
        run_training_experiment(fork.replace(run_name="inherit", fork_early_stopping="inherit"))


def test_infer_reads_a_published_dora_params_file(small, tmp_path, demo_dir, capsys):
    """model_weights_path: a published epoch{e}_dora_params.pth gives the predictions of the same adapters."""
    from hba_sweep.training.inference import run_inference

    make, _ = small
    base = make(run_name="base", epochs=1, transformer_layers=1)
    run_training_experiment(base)
    folder = write_published_run(run_dir(base), tmp_path / "published_base", [0])
    things = yaml.safe_load((demo_dir / "evalsets.yaml").read_text())["things"]
    common = {
        "img_dir": str(demo_dir / things["img_dir"]),
        "annotations_file": str(demo_dir / things["annotations_file"]),
        "reference_rdm_paths": {"behavior": str(demo_dir / things["reference_rdms"]["behavior"])},
        "backbone": base.backbone,
        "pretrained": base.pretrained,
        "vision_layers": base.vision_layers,
        "transformer_layers": base.transformer_layers,
        "rank": base.rank,
        "evaluation_type": "behavioral",
    }
    ours = run_inference({**common, "model_weights_path": str(run_dir(base)), "epoch": 0})
    theirs = run_inference({**common, "model_weights_path": str(folder / "dora_params" / "epoch0_dora_params.pth")})
    assert theirs["epoch"] == 0
    np.testing.assert_allclose(theirs["predictions"], ours["predictions"], rtol=1e-6, atol=1e-6)
    by_folder = run_inference({**common, "model_weights_path": str(folder), "epoch": 0})
    np.testing.assert_allclose(by_folder["predictions"], ours["predictions"], rtol=1e-6, atol=1e-6)
