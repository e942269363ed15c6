"""One Tune experiment per study: dependency-aware release, growth, skips, the driver lock, status.

Trials train with the sleep stand-in (tests/support/sleep_trainable.py): the runner, Tune and the
files are real, the training is not the point here.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import ray
from ray.tune import ExperimentAnalysis
from support.sleep_trainable import sleep_training
from support.stand_in import training

from hba_sweep.cli import main
from hba_sweep.foundation.errors import ConfigError
from hba_sweep.sweep import lock
from hba_sweep.sweep.runner import RunOptions, run_study
from hba_sweep.sweep.spec import load_search_space
from hba_sweep.sweep.status import read_study

pytestmark = pytest.mark.slow
BASE = "cliphba_dora_hba-tiny_r16_v2_t3_seed{seed}_baseline"
FORK = "cliphba_dora_hba-tiny_r16_v2_t3_seed{seed}_{kind}_e{e}_l1_ps42"


def write_space(path: Path, demo: Path, epochs: list[int], seeds: list[int] = (1,), types=("label_shuffle",)) -> Path:
    path.write_text(f"""
from ray import tune
NAME = "study"
BASE_CONFIG = {str(demo / "train.yaml")!r}
PARAM_SPACE = {{"backbone": "hba-tiny", "pretrained": "none", "device": "cpu", "epochs": 4,
    "random_seed": tune.grid_search({list(seeds)}), "perturb_type": tune.grid_search({list(types)}),
    "perturb_epoch": tune.grid_search({list(epochs)}), "perturb_length": 1}}
RESOURCES = {{"cpu": 1}}
MAX_FAILURES = 0
""")
    return path


def run(space: Path, storage: Path, resume: bool = False, **fake):
    with training(functools.partial(sleep_training, **fake)):
        return run_study(load_search_space(space), RunOptions(storage=str(storage), verbose=0, resume=resume))


def frames(root: str) -> dict:
    analysis = ExperimentAnalysis(root)
    return {t.config["run_name"]: analysis.trial_dataframes[t.trial_id] for t in analysis.trials}


def snapshot(trial: Path) -> dict:
    """Our files of a trial (checkpoints, done marker): size and mtime."""
    files = [*trial.glob("checkpoint_*/*"), trial / "done.json"]
    return {str(p.relative_to(trial)): (p.stat().st_size, p.stat().st_mtime_ns) for p in files if p.is_file()}


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_one_experiment_forks_after_their_epoch_then_growth(ray_local, demo_dir, tmp_path):
    space = write_space(tmp_path / "space.py", demo_dir, [0, 2])
    first = run(space, tmp_path / "rr", seconds=0.2)
    root = Path(first.root)
    assert first.exit_code == 0 and len(first.ok) == 3
    tables = frames(str(root))  # the whole study is one Tune experiment
    base = tables[BASE.format(seed=1)].set_index("epoch")
    assert base.index.tolist() == [-1, 0, 1, 2, 3]
    fork = tables[FORK.format(seed=1, kind="label_shuffle", e=2)]
    assert fork["epoch"].tolist() == [2, 3]  # forked after epoch 1: nothing before its window recomputed
    assert fork["ended"].iloc[0] > base.loc[1, "ended"]  # never before its baseline's epoch existed
    assert tables[FORK.format(seed=1, kind="label_shuffle", e=0)]["epoch"].tolist() == [-1, 0, 1, 2, 3]
    manifest = json.loads((root / "study.json").read_text())
    entry = manifest["trials"][FORK.format(seed=1, kind="label_shuffle", e=2)]
    assert entry["init_epoch"] == 1 and entry["init_from"].endswith(f"{BASE.format(seed=1)}/checkpoint_000002")
    assert entry["tune_trial_id"] and entry["status"] == "done" and entry["role"] == "perturbed"
    before = {p.name: snapshot(p) for p in root.iterdir() if (p / "done.json").is_file()}

    # grow: a new start epoch and a new seed; epoch 0 dropped from the space
    write_space(space, demo_dir, [1, 2], seeds=[1, 2])
    grown = run(space, tmp_path / "rr", resume=True)
    assert grown.exit_code == 0 and len(grown.ok) == 6  # 2 baselines + 4 forks of the current space
    for name, files in before.items():
        assert snapshot(root / name) == files, name  # finished trials never re-run
    tables = frames(str(root))
    assert len(tables) == 6 and FORK.format(seed=1, kind="label_shuffle", e=0) not in tables
    new = tables[FORK.format(seed=1, kind="label_shuffle", e=1)]
    assert new["epoch"].tolist() == [1, 2, 3]  # forked from the existing baseline's epoch 0
    assert not (root / BASE.format(seed=1) / "checkpoint_000005").exists()  # the baseline did not train again
    manifest = json.loads((root / "study.json").read_text())
    (ext,) = manifest["extensions"]
    assert sorted(ext["added"]) == sorted(
        [
            FORK.format(seed=1, kind="label_shuffle", e=1),
            BASE.format(seed=2),
            FORK.format(seed=2, kind="label_shuffle", e=1),
            FORK.format(seed=2, kind="label_shuffle", e=2),
        ]
    )
    assert ext["not_in_space"] == [FORK.format(seed=1, kind="label_shuffle", e=0)]
    _, rows = read_study(root)
    states = {r.name: (r.state, r.note) for r in rows}
    assert states[FORK.format(seed=1, kind="label_shuffle", e=0)] == ("finished", "not in the current space")
    assert sum(s == "finished" for s, _ in states.values()) == 7


def test_fork_of_an_early_stopped_baseline_is_skipped(ray_local, demo_dir, tmp_path):
    space = write_space(tmp_path / "space.py", demo_dir, [2, 3])
    outcome = run(space, tmp_path / "rr", stop_after={"baseline": 1})  # the baseline returns after epoch 1
    skipped = FORK.format(seed=1, kind="label_shuffle", e=3)  # needs epoch 2, which never ran
    assert outcome.skipped == [skipped] and len(outcome.ok) == 2 and outcome.exit_code == 1
    root = Path(outcome.root)
    assert not (root / skipped).exists()  # never trained from scratch
    note = json.loads((root / "study.json").read_text())["trials"][skipped]["skip_reason"]
    assert "ended after epoch 1" in note and "not trained from scratch" in note
    _, rows = read_study(root)
    states = {r.name: r for r in rows}
    assert states[skipped].state == "skipped" and "ended after epoch 1" in states[skipped].note
    assert states[BASE.format(seed=1)].state == "stopped early"
    assert "early stopping after epoch 1" in states[BASE.format(seed=1)].note


def test_second_driver_is_refused_and_a_dead_ones_lock_is_taken(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "-m", "hba_sweep", "run"])
    while "hba_sweep" not in " ".join(psutil.Process(holder.pid).cmdline()):  # until exec: a driver's command line
        time.sleep(0.02)
    try:
        (tmp_path / "driver.lock").write_text(
            json.dumps(
                {"pid": holder.pid, "host": os.uname().nodename, "started": "2026-01-01T00:00:00", "command": "run x"}
            )
        )
        with pytest.raises(lock.ConfigError, match=f"another driver runs this study: pid {holder.pid}"):
            lock.acquire(str(tmp_path))
        assert "driver: running" in read_driver(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert "driver: gone" in read_driver(tmp_path)  # killed: status says so
    mine = lock.acquire(str(tmp_path))  # stale: taken over
    assert json.loads((tmp_path / "driver.lock").read_text())["pid"] == os.getpid()
    lock.release(str(tmp_path), mine)
    assert not (tmp_path / "driver.lock").exists()


def read_driver(root: Path) -> str:
    from hba_sweep.sweep.status import driver_line

    return driver_line(root, {"runs": [{}]}, lock.read_lock(str(root)))


def test_corrupt_manifest_is_a_clear_error(demo_dir, tmp_path, capsys):
    space = write_space(tmp_path / "space.py", demo_dir, [1])
    (tmp_path / "rr" / "study").mkdir(parents=True)
    (tmp_path / "rr" / "study" / "study.json").write_text('{"trials": {"a": ')
    code = main(["run", str(space), "--storage", str(tmp_path / "rr"), "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "study.json: not a readable study manifest" in err and "--resume" in err
    assert main(["status", str(tmp_path / "rr" / "study")]) == 2


def test_lock_on_object_storage_is_a_checked_marker(tmp_path):
    """A URI (here file://) has no exclusive create: the lock is a marker written then read back."""
    root = f"file://{tmp_path}/study"
    mine = lock.acquire(root)
    assert json.loads((tmp_path / "study" / "driver.lock").read_text())["pid"] == os.getpid()
    other = dict(mine, pid=mine["pid"] + 1, host="elsewhere")
    (tmp_path / "study" / "driver.lock").write_text(json.dumps(other))
    with pytest.raises(lock.ConfigError, match="pid .* on elsewhere .* delete file://"):
        lock.acquire(root)
    (tmp_path / "study" / "driver.lock").write_text(json.dumps(mine))
    lock.release(root, mine)
    assert not (tmp_path / "study" / "driver.lock").exists()


def test_searched_study_status_names_the_best_trial(ray_local, demo_dir, tmp_path, capsys):
    """A SEARCH_ALG study: status prints the trial whose own epochs reach the best METRIC/MODE value,
    recomputed here from the trials' metrics (the sleep stand-in's loss grows with the seed)."""
    space = tmp_path / "searched.py"
    space.write_text(f"""
from ray import tune
NAME = "searched"
BASE_CONFIG = {str(demo_dir / "train.yaml")!r}
PARAM_SPACE = {{"backbone": "hba-tiny", "pretrained": "none", "device": "cpu", "epochs": 2,
    "random_seed": tune.choice([3, 1, 2])}}
METRIC = "val_loss"
MODE = "min"
NUM_SAMPLES = 3
RESOURCES = {{"cpu": 1}}
def SEARCH_ALG():
    from ray.tune.search.basic_variant import BasicVariantGenerator
    return BasicVariantGenerator(points_to_evaluate=[{{"random_seed": 3}}, {{"random_seed": 1}}, {{"random_seed": 2}}])
""")
    outcome = run(space, tmp_path / "results")
    assert outcome.exit_code == 0
    seeds = {json.loads(p.read_text())["settings"]["random_seed"] for p in Path(outcome.root).glob("*/identity.json")}
    assert seeds == {1, 2, 3}  # searched trials record what they are too
    analysis, losses = ExperimentAnalysis(outcome.root), {}
    for trial in analysis.trials:
        rows = analysis.trial_dataframes[trial.trial_id]
        losses[trial.trial_id] = (rows.loc[rows["epoch"] >= 0, "val_loss"].min(), trial.config["random_seed"])
    best_id = min(losses, key=lambda t: losses[t][0])
    capsys.readouterr()
    assert main(["status", outcome.root]) == 0
    line = [l for l in capsys.readouterr().out.splitlines() if l.startswith("best trial")]
    assert len(line) == 1 and f"[{best_id}]" in line[0] and "random_seed=1" in line[0], line
    assert f"val_loss={losses[best_id][0]:.4f}" in line[0]

    # A corrupt Tune state: --resume names the file and the fix, and leaves every trial's files alone
    state = sorted(Path(outcome.root).glob("experiment_state-*.json"))[-1]
    state.write_text('{"trial_data": [')
    trials = {p: p.stat().st_mtime_ns for d in Path(outcome.root).iterdir() if d.is_dir() for p in d.rglob("*")}
    with pytest.raises(ConfigError, match="Tune cannot read its saved state") as err:
        run(space, tmp_path / "results", resume=True)
    assert state.name in str(err.value) and "Fix: move that file away" in str(err.value)
    assert {p: p.stat().st_mtime_ns for p in trials} == trials
