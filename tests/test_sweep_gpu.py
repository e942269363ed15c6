"""Per-trial GPU allocation without a GPU: Ray with 1 logical GPU, trials asking for 0.5 each."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support import stand_in  # noqa: E402

from hba_sweep.sweep.expand import Trial  # noqa: E402
from hba_sweep.sweep.runner import RunOptions, independent, run_trials  # noqa: E402
from hba_sweep.sweep.spec import SearchSpace  # noqa: E402

pytestmark = pytest.mark.slow


def fake_training(config, report=None):
    """Stands in for run_training_experiment: 3 slow epochs with tiny checkpoints."""
    import json

    from hba_sweep.config import run_dir

    out = run_dir(config)
    for epoch in (-1, 0, 1):
        ckpt = out / "checkpoints" / f"epoch_{epoch}"
        ckpt.mkdir(parents=True, exist_ok=True)
        (ckpt / "meta.json").write_text(json.dumps({"epoch": epoch}))
        started = time.time()
        time.sleep(0.7)
        report(
            {
                "epoch": epoch,
                "val_loss": 1.0,
                "behavioral_rsa_rho": 0.0,
                "config_device": config.device,
                "started": started,
                "ended": time.time(),
            },
            str(ckpt),
        )
    return {}


def test_half_gpu_trials_share_one_logical_gpu(tmp_path, capfd):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "train.csv").write_text("x\n")
    base = {
        "backbone": "hba-tiny",
        "pretrained": "none",
        "epochs": 2,
        "behavioral_rsa": False,
        "img_dir": str(data / "images"),
        "img_annotations_file": str(data / "train.csv"),
    }
    space = SearchSpace(
        path=tmp_path / "space.py",
        name="gpu",
        base=base,
        base_source="test",
        param_space={},
        resources={"cpu": 0.5, "gpu": 0.5},
        max_failures=0,
    )
    from hba_sweep.config import from_dict

    trials = [Trial(name=f"gpu_trial_{i}", config=from_dict({**base, "random_seed": i}).to_dict()) for i in range(4)]
    import sys

    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False)
    try:
        root = str(tmp_path / "rr" / "gpu")
        with stand_in.training(fake_training):
            _, results = run_trials(independent(trials, root), space, RunOptions(verbose=0), root)
        time.sleep(1.0)  # let the workers' output reach the driver
    finally:
        ray.shutdown()
    assert len(results) == 4 and not any(r.error for r in results)
    spans = []
    for result in results:
        df = result.metrics_dataframe
        assert set(df["gpu_ids"].astype(str)) <= {"0"} and len(set(df["gpu_ids"].astype(str))) == 1  # told its id
        assert set(df["device"]) == {"cpu"} and set(df["config_device"]) == {"cpu"}  # no CUDA here
        spans.append((df["started"].min(), df["ended"].max()))
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak == 2  # two half-GPU trials at a time, never more
    out = capfd.readouterr()
    for result in results:  # each trial says (and records) that it falls back to the CPU
        name = Path(result.path).name
        assert set(result.metrics_dataframe["device_note"]) == {
            f"{name}: Ray assigned GPU id(s) 0 but CUDA is not available here: training on CPU."
        }
    assert "CUDA is not available here: training on CPU" in out.out + out.err
    assert Path(results[0].path).name.startswith("gpu_trial_")
