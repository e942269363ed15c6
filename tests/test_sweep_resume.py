"""--resume starts the forks an earlier run never started because their baseline had failed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import ray

from hba_sweep.sweep.runner import RunOptions, run_study  # noqa: E402
from hba_sweep.sweep.spec import load_search_space  # noqa: E402

pytestmark = pytest.mark.slow

SPACE = """
from ray import tune
NAME = "resume_forks"
BASE_CONFIG = {demo!r}
PARAM_SPACE = {{
    "epochs": 3,
    "random_seed": tune.grid_search([1, 2]),
    "perturb_type": "label_shuffle",
    "perturb_epoch": 1,
    "perturb_length": 1,
}}
RESOURCES = {{"cpu": 1}}
MAX_FAILURES = 0
"""


def test_resume_runs_forks_skipped_by_a_failed_baseline(demo_dir, tmp_path, monkeypatch):
    space_file = tmp_path / "space.py"
    space_file.write_text(SPACE.format(demo=str(demo_dir / "train.yaml")))
    # seed 2's baseline fails once at epoch 0 (no retries): its fork is skipped in the first run
    monkeypatch.setenv("HBA_SWEEP_FAULT", f"epoch:0:{tmp_path / 'fault.marker'}:seed2_baseline")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        first = run_study(load_search_space(space_file), RunOptions(storage=str(tmp_path / "rr"), verbose=0))
        assert len(first.failed) == 1 and len(first.skipped) == 1 and len(first.ok) == 2
        again = run_study(
            load_search_space(space_file), RunOptions(storage=str(tmp_path / "rr"), verbose=0, resume=True)
        )
    finally:
        ray.shutdown()
    root = Path(again.root)
    assert again.exit_code == 0 and not again.failed and not again.skipped
    manifest = json.loads((root / "study.json").read_text())
    assert [r["skipped"] for r in manifest["runs"]] == [1, 0]
    fork = "cliphba_dora_hba-tiny_r16_v2_t3_seed2_label_shuffle_e1_l1_ps42"
    history = pd.read_csv(root / fork / "run" / "metrics.csv")
    assert history["epoch"].tolist() == [-1, 0, 1, 2] and history["inherited"].tolist() == [True, True, False, False]
    done_first = root / "cliphba_dora_hba-tiny_r16_v2_t3_seed1_label_shuffle_e1_l1_ps42"
    assert len(pd.read_csv(done_first / "progress.csv")) == 2  # not re-run: epochs 1, 2 once
    assert sorted(p.name for p in done_first.glob("checkpoint_*")) == ["checkpoint_000000", "checkpoint_000001"]
    assert os.environ["HBA_SWEEP_FAULT"]  # the hook was armed for the whole test


def test_trials_that_cannot_fit_are_refused_before_anything_is_written(demo_dir, tmp_path):
    from hba_sweep.foundation.errors import ConfigError

    space_file = tmp_path / "gpu_space.py"
    space_file.write_text(
        f'NAME = "gpu"\nBASE_CONFIG = {str(demo_dir / "train.yaml")!r}\n'
        'PARAM_SPACE = {"epochs": 1}\nRESOURCES = {"cpu": 1, "gpu": 0.5}\n'
    )
    opts = RunOptions(storage=str(tmp_path / "rr"), verbose=0, dashboard=False, ray_init={"num_cpus": 2, "num_gpus": 0})
    with pytest.raises(ConfigError, match="--gpus-per-trial 0"):
        run_study(load_search_space(space_file), opts)
    assert not ray.is_initialized() and not (tmp_path / "rr").exists()
