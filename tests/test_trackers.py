"""Trackers through the CLI: MLflow (a sqlite store), W&B (WANDB_MODE=offline) and TensorBoard all
plot against the epoch, not Tune's iteration: a baseline's steps are -1, 0, 1, 2 and a fork from
epoch 2 logs its first result at step 2 (Tune calls it iteration 1) in MLflow and TensorBoard; every
W&B run defines ``epoch`` as the step metric of all its charts. TensorBoard's HParams carry the
perturbation settings. A tracker that cannot work stops `run` before anything is written.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_small_run_config

# .ci/run's second step (-m long): a real cluster, storage or tracker end to end
pytestmark = [pytest.mark.slow, pytest.mark.long]
ROOT = Path(__file__).resolve().parent.parent


def cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hba_sweep", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=500
    )


def tb_events(path: Path):
    """The Event protos of a TensorBoard event file (TFRecord framing: length, crc, data, crc)."""
    from tensorboardX.proto.event_pb2 import Event

    data, pos = path.read_bytes(), 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        event = Event()
        event.ParseFromString(data[pos + 12 : pos + 12 + length])
        pos += 12 + length + 4
        yield event


def wandb_records(path: Path):
    """The Record protos of a W&B offline run file (a LevelDB-style log of 32 KiB blocks after a 7-byte header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, buf = path.read_bytes(), 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        if kind == 0:
            break
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def trial_epochs(trial_dir: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]


@pytest.mark.timeout(900)
def test_trackers_use_the_epoch_as_x_axis(demo_dir, tmp_path):
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    import yaml
    from mlflow.tracking import MlflowClient

    config, values, _ = write_small_run_config(demo_dir, tmp_path, "trk")
    values.pop("run_name")  # each trial named by its settings
    config.write_text(yaml.safe_dump(values))
    space = tmp_path / "trk.py"
    space.write_text(f"""
NAME = "trk"
BASE_CONFIG = {str(config)!r}
PARAM_SPACE = {{"epochs": 3, "random_seed": 1, "perturb_type": "label_shuffle", "perturb_epoch": 2,
               "perturb_length": 1, "perturb_seed": 42}}
RESOURCES = {{"cpu": 1}}
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "WANDB_", "MLFLOW_", "HBA_SWEEP_FAULT"))}
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        HOME=str(tmp_path / "home"),
        WANDB_MODE="offline",
    )
    storage = tmp_path / "results"

    refused = cli(
        ["run", str(space), "--storage", str(storage), "--mlflow", f"file://{tmp_path}/mlruns"], env, tmp_path
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr[-3000:]
    assert "MLflow cannot use this tracking URI" in refused.stderr and "sqlite:///" in refused.stderr
    assert not storage.exists()  # nothing written: the same --name starts afterwards

    db = f"sqlite:///{tmp_path}/mlflow.db"
    run = cli(
        ["run", str(space), "--storage", str(storage), "--mlflow", db, "--wandb", "hba-test", "--no-dashboard"],
        env,
        tmp_path,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    trials = {p.parent.name: p.parent for p in (storage / "trk").rglob("result.json")}
    assert len(trials) == 2, list(trials)
    epochs = {name: trial_epochs(path) for name, path in trials.items()}
    fork = next(
        name
        for name, path in trials.items()
        if json.loads((path / "params.json").read_text())["perturb_type"] != "none"
    )
    base = next(name for name in trials if name != fork)
    assert epochs[base] == [-1, 0, 1, 2] and epochs[fork] == [2]  # the fork's first result is Tune's iteration 1

    client = MlflowClient(tracking_uri=db)
    experiment = client.get_experiment_by_name("trk")
    for mlrun in client.search_runs([experiment.experiment_id]):
        name = mlrun.data.tags.get("trial_name") or mlrun.info.run_name
        steps = [m.step for m in client.get_metric_history(mlrun.info.run_id, "val_loss")]
        assert sorted(steps) == epochs[name], (name, steps)

    for name, path in trials.items():
        events = [e for f in path.glob("events.out.tfevents.*") for e in tb_events(f)]
        steps = [e.step for e in events for v in e.summary.value if v.tag == "ray/tune/val_loss"]
        assert steps == epochs[name], (name, steps)
        hparams = b"".join(
            v.metadata.plugin_data.content
            for e in events
            for v in e.summary.value
            if v.metadata.plugin_data.plugin_name == "hparams"
        )
        for key in (b"perturb_type", b"perturb_epoch", b"perturb_length", b"perturb_seed"):
            assert key in hparams, (name, key)

    # WANDB_MODE=offline honoured: one offline run per trial, in the study's own wandb/ folder
    offline = list((storage / "trk" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == len(trials), offline
    # and each run's charts are drawn against the trial's own epochs (the fork's first point at epoch 2)
    runs = [list(wandb_records(f)) for f in offline]
    for records in runs:
        assert any(
            r.WhichOneof("record_type") == "metric" and r.metric.glob_name == "*" and r.metric.step_metric == "epoch"
            for r in records
        )
    logged = [
        [
            json.loads(i.value_json)
            for r in records
            if r.WhichOneof("record_type") == "history"
            for i in r.history.item
            if (i.key or "/".join(i.nested_key)) == "epoch"
        ]
        for records in runs
    ]
    assert sorted(logged) == sorted(epochs.values()), logged


WANDB_RUN = """
import sys, wandb
from hba_sweep.sweep.trackers import _EpochAxis
axis = _EpochAxis(wandb)
run = axis.init(project="hba-test", dir=sys.argv[1])
for step, epoch in enumerate([2, 3], start=1):  # a fork from epoch 2, as Tune's logging actor calls it
    axis.log({"epoch": epoch, "val_loss": 1.0 / epoch}, step=step)
run.finish()
"""


def test_wandb_runs_plot_against_the_epoch(tmp_path):
    """The wandb module the logging actors use: every run defines ``epoch`` as the step metric of all
    charts, so a fork's first result (Tune's step 1) is drawn at its epoch. (A run of its own: W&B's
    service and pytest's output capture do not mix.)"""
    pytest.importorskip("wandb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        HOME=str(tmp_path),
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    subprocess.run([sys.executable, "-c", WANDB_RUN, str(tmp_path)], env=env, check=True, timeout=300)
    records = [r for f in tmp_path.glob("wandb/offline-run-*/run-*.wandb") for r in wandb_records(f)]
    assert any(
        r.WhichOneof("record_type") == "metric" and r.metric.glob_name == "*" and r.metric.step_metric == "epoch"
        for r in records
    )
    logged = [
        json.loads(i.value_json)
        for r in records
        if r.WhichOneof("record_type") == "history"
        for i in r.history.item
        if (i.key or "/".join(i.nested_key)) == "epoch"
    ]
    assert logged == [2, 3]
