"""A study never mixes trials of other settings, files or lengths: trials are matched by identity.

Each test reproduces an operation on a real study folder that used to give silently mixed numbers.
Trials train with the sleep stand-in (tests/support/sleep_trainable.py): the runner, Tune, the
searcher, the trainable's identity record and every file on storage are the product's.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path

import pytest
import ray
from support.sleep_trainable import sleep_training
from support.stand_in import training

from hba_sweep.cli import main
from hba_sweep.foundation.errors import ConfigError
from hba_sweep.sweep.runner import RunOptions, run_study
from hba_sweep.sweep.spec import load_search_space

pytestmark = pytest.mark.slow
BASE = "cliphba_dora_hba-tiny_r16_v2_t3_seed1_baseline"
FORK = "cliphba_dora_hba-tiny_r16_v2_t3_seed1_label_shuffle_e{e}_l1_ps42"


def write_space(path: Path, data: Path, epochs: list[int], lr="0.01", n_epochs: int = 3) -> Path:
    path.write_text(f"""
from ray import tune
NAME = "study"
BASE_CONFIG = {str(data / "train.yaml")!r}
PARAM_SPACE = {{"epochs": {n_epochs}, "lr": {lr}, "perturb_type": "label_shuffle",
    "perturb_epoch": tune.grid_search({list(epochs)}), "perturb_length": 1}}
RESOURCES = {{"cpu": 1}}
MAX_FAILURES = 0
""")
    return path


def run(space: Path, storage: Path, resume: bool = False):
    with training(functools.partial(sleep_training, seconds=0.01)):
        return run_study(load_search_space(space), RunOptions(storage=str(storage), verbose=0, resume=resume))


def snapshot(trial: Path) -> dict:
    files = [*trial.glob("checkpoint_*/*"), trial / "done.json"]
    return {str(p.relative_to(trial)): p.stat().st_mtime_ns for p in files if p.is_file()}


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture()
def data(demo_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the demo data (these tests change files in it)."""
    return Path(shutil.copytree(demo_dir, tmp_path / "data"))


@pytest.fixture()
def study(ray_local, data: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A finished study: one baseline and a fork at epoch 1, 3 epochs."""
    space = write_space(tmp_path / "space.py", data, [1])
    outcome = run(space, tmp_path / "rr")
    assert outcome.exit_code == 0 and len(outcome.ok) == 2
    return space, Path(outcome.root)


def test_every_trial_records_its_identity(study):
    _, root = study
    manifest = json.loads((root / "study.json").read_text())
    assert manifest["identity"]["settings"]["lr"] == 0.01 and "behavioral_rdm_file" in manifest["identity"]["inputs"]
    record = json.loads((root / BASE / "identity.json").read_text())
    assert record["key"] == manifest["trials"][BASE]["identity"]
    assert set(record["inputs"]) >= {"images", "rsa_images", "img_annotations_file", "behavioral_rdm_file"}
    assert record["inputs"]["images"]["files"] > 0 and record["version"]
    fork = json.loads((root / FORK.format(e=1) / "identity.json").read_text())
    assert fork["settings"]["perturb_type"] == "label_shuffle" and fork["key"] != record["key"]


def refused(space: Path, tmp_path: Path, capsys) -> str:
    """``run SPACE --resume`` through the CLI: exit 2; its stderr."""
    capsys.readouterr()
    assert main(["run", str(space), "--storage", str(tmp_path / "rr"), "--resume"]) == 2
    return capsys.readouterr().err


def test_changed_base_setting_is_refused_naming_it(study, data, tmp_path, capsys):
    space, root = study
    write_space(space, data, [1, 2], lr="0.005")  # the base lr edited and a start epoch added
    before = sorted(p.name for p in root.iterdir())
    err = refused(space, tmp_path, capsys)
    assert "lr: 0.01 -> 0.005" in err and "--name" in err and "Traceback" not in err
    assert sorted(p.name for p in root.iterdir()) == before  # nothing started, nothing written


def test_a_grid_value_added_reuses_the_trials_that_exist(study, data, tmp_path, capsys):
    space, root = study
    kept = {name: snapshot(root / name) for name in (BASE, FORK.format(e=1))}
    write_space(space, data, [1], lr="tune.grid_search([0.01, 0.005])")
    capsys.readouterr()
    assert main(["run", str(space), "--storage", str(tmp_path / "rr"), "--resume", "--dry-run"]) == 0
    preview = capsys.readouterr().out
    assert "2 trial(s) of the search space are trials on storage under their earlier names" in preview
    assert "2 of 4 trials are on storage (2 finished), 2 new" in preview and BASE + "\n" in preview
    outcome = run(space, tmp_path / "rr", resume=True)
    assert outcome.exit_code == 0 and len(outcome.ok) == 4
    assert {name: snapshot(root / name) for name in kept} == kept  # the lr=0.01 trials were not re-run
    manifest = json.loads((root / "study.json").read_text())
    assert all(manifest["trials"][name]["in_space"] for name in kept)  # the same trials, not "not in the space"
    new = sorted(n for n in manifest["trials"] if n not in kept)
    assert len(new) == 2 and all("lr0.005" in n for n in new)
    lrs = {json.loads((root / n / "identity.json").read_text())["settings"]["lr"] for n in manifest["trials"]}
    assert lrs == {0.01, 0.005}
    assert main(["status", str(root), "--verbose"]) == 0
    shown = capsys.readouterr().out
    assert manifest["trials"][BASE]["identity"] in shown and "lr" in shown


def test_replaced_reference_file_is_refused(study, data, tmp_path, capsys):
    space, _ = study
    rdm = data / "eval48" / "RDM48_triplet.mat"
    blob = bytearray(rdm.read_bytes())
    blob[-1] ^= 0xFF
    rdm.write_bytes(bytes(blob))
    write_space(space, data, [1, 2])  # growth, with the RDM file replaced since the baseline ran
    assert "behavioral_rdm_file: content changed" in refused(space, tmp_path, capsys)


def test_image_changed_with_size_and_mtime_kept_is_refused(study, data, tmp_path, capsys):
    space, _ = study
    image = sorted((data / "images").iterdir())[0]
    st = image.stat()
    blob = bytearray(image.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    image.write_bytes(bytes(blob))
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert image.stat().st_size == st.st_size and image.stat().st_mtime_ns == st.st_mtime_ns
    assert "images: content changed" in refused(space, tmp_path, capsys)


def test_raising_epochs_extends_the_study(study, data, tmp_path):
    space, root = study
    write_space(space, data, [1, 4], n_epochs=6)  # a fork past the old last epoch (needs baseline epoch 3)
    outcome = run(space, tmp_path / "rr", resume=True)
    assert outcome.exit_code == 0 and not outcome.skipped and len(outcome.ok) == 3
    for name in (BASE, FORK.format(e=1), FORK.format(e=4)):
        done = json.loads((root / name / "done.json").read_text())
        assert done["last_epoch"] == 5 and done["reason"] == "completed"
    epochs = [json.loads(line)["epoch"] for line in (root / BASE / "result.json").read_text().splitlines()]
    assert epochs[-3:] == [3, 4, 5]  # continued from its last checkpoint, not retrained
    manifest = json.loads((root / "study.json").read_text())
    assert manifest["extensions"][-1]["extended"][BASE] == {"epochs": [3, 6]}


def test_early_stopped_baseline_stays_and_fork_says_why(ray_local, data, tmp_path):
    space = write_space(tmp_path / "space.py", data, [1])
    with training(functools.partial(sleep_training, seconds=0.01, stop_after={"baseline": 1})):
        first = run_study(load_search_space(space), RunOptions(storage=str(tmp_path / "rr"), verbose=0))
    assert first.exit_code == 0
    write_space(space, data, [1, 4], n_epochs=6)
    outcome = run(space, tmp_path / "rr", resume=True)
    assert outcome.skipped == [FORK.format(e=4)]
    note = json.loads((Path(outcome.root) / "study.json").read_text())["trials"][FORK.format(e=4)]["skip_reason"]
    assert "early stopping after epoch 1" in note and "scheduler" not in note
    assert json.loads((Path(outcome.root) / BASE / "done.json").read_text())["last_epoch"] == 1  # not extended


def test_resume_of_a_missing_study_is_an_error(study, tmp_path, capsys):
    space, _ = study
    code = main(["run", str(space), "--storage", str(tmp_path / "elsewhere"), "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "no study to resume" in err and str(tmp_path / "elsewhere") in err
    code = main(["run", str(space), "--storage", str(tmp_path / "rr"), "--name", "stduy", "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "Studies in" in err and "study" in err and not (tmp_path / "rr" / "stduy").exists()


def test_node_with_other_files_is_refused(data, tmp_path):
    from hba_sweep.artifacts.identity import planned_identity, trial_identity
    from hba_sweep.config import load_config
    from trainables.hba_trainable import record_identity

    config = load_config(data / "train.yaml").to_dict()
    planned = planned_identity(trial_identity(config))
    (tmp_path / "trial").mkdir()
    record_identity(str(tmp_path / "trial"), config, planned)  # same files: recorded
    assert json.loads((tmp_path / "trial" / "identity.json").read_text())["key"] == planned["key"]
    (data / "train.csv").write_text((data / "train.csv").read_text() + "\n")
    with pytest.raises(ConfigError, match="img_annotations_file: content changed"):
        record_identity(str(tmp_path / "trial"), config, planned)


def test_fork_refuses_a_baseline_trained_on_other_files(data, tmp_path, capsys):
    """A fork (here through `train` with init_from) reads the files its baseline recorded, or refuses."""
    import scipy.io
    from conftest import write_small_run_config

    config, _, _ = write_small_run_config(data, tmp_path, "base")
    assert main(["train", "--config", str(config), "--set", "epochs=2"]) == 0
    rdm = data / "eval48" / "RDM48_triplet.mat"
    mat = {k: v for k, v in scipy.io.loadmat(rdm).items() if not k.startswith("__")}
    scipy.io.savemat(rdm, {k: v * 1.5 for k, v in mat.items()})  # another RDM under the same name
    capsys.readouterr()
    code = main(
        [
            "train",
            "--config",
            str(config),
            "--set",
            "epochs=2",
            "--set",
            "run_name=fork",
            "--set",
            "perturb_type=label_shuffle",
            "--set",
            "perturb_epoch=1",
            "--set",
            f"init_from={tmp_path / 'results' / 'base'}",
            "--set",
            "init_epoch=0",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "behavioral_rdm_file" in err and "differ from those it was trained on" in err


def test_fork_of_a_baseline_whose_data_moved_runs(data, tmp_path):
    """The same files in another folder are the same inputs: a fork finds its baseline's by content."""
    import yaml
    from conftest import write_small_run_config

    config, _, _ = write_small_run_config(data, tmp_path, "base")
    assert main(["train", "--config", str(config), "--set", "epochs=2"]) == 0
    moved = Path(shutil.move(data, tmp_path / "moved"))
    values = yaml.safe_load(config.read_text())
    for key in ("img_dir", "rsa_annotations_file", "rsa_img_dir", "behavioral_rdm_file"):
        values[key] = values[key].replace(str(data), str(moved))
    config.write_text(yaml.safe_dump(values))
    fork = ["--set", "run_name=fork", "--set", "perturb_type=label_shuffle", "--set", "perturb_epoch=1"]
    source = ["--set", f"init_from={tmp_path / 'results' / 'base'}", "--set", "init_epoch=0"]
    assert main(["train", "--config", str(config), "--set", "epochs=2", *fork, *source]) == 0


def test_resume_refuses_an_image_of_its_split_rewritten(data, tmp_path, capsys):
    """A run resumed with one of its images rewritten (size and mtime kept) and a row added to the CSV:
    the image is named, the run does not go on with another picture under the same name."""
    import pandas as pd
    from conftest import rewrite_same_size, write_small_run_config

    config, _, csv = write_small_run_config(data, tmp_path, "run")
    assert main(["train", "--config", str(config), "--set", "epochs=2"]) == 0
    names = pd.read_csv(csv)["image_name"]
    rewrite_same_size(data / "images" / names[0])
    extra = (data / "train.csv").read_text().splitlines()[len(names) + 1]
    csv.write_text(csv.read_text() + extra + "\n")  # another row: the image list differs too
    capsys.readouterr()
    code = main(["train", "--config", str(config), "--set", "epochs=3", "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "image files of 1 image(s)" in err and names[0] in err
