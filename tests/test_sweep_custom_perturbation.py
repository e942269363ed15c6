"""A perturbation type registered in a search-space file reaches the Ray workers that train."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import ray

from hba_sweep.sweep.runner import RunOptions, run_study  # noqa: E402
from hba_sweep.sweep.spec import load_search_space  # noqa: E402

pytestmark = pytest.mark.slow

SPACE = """
import torch
from hba_sweep.perturbations import PerturbationStrategy, register

@register("halve_targets")
class HalveTargets(PerturbationStrategy):
    def replacement_targets(self, targets, epoch_idx, batch_idx):
        return targets * 0.5

NAME = "custom"
BASE_CONFIG = {demo!r}
PARAM_SPACE = {{"epochs": 2, "perturb_type": "halve_targets", "perturb_epoch": 1, "perturb_length": 1}}
RESOURCES = {{"cpu": 1}}
FORK_FROM_BASELINE = False
MAX_FAILURES = 0
"""


def test_user_registered_perturbation_runs_on_ray(demo_dir, tmp_path):
    space_file = tmp_path / "custom_space.py"
    space_file.write_text(SPACE.format(demo=str(demo_dir / "train.yaml")))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        outcome = run_study(load_search_space(space_file), RunOptions(storage=str(tmp_path / "rr"), verbose=0))
    finally:
        ray.shutdown()
    assert outcome.exit_code == 0 and len(outcome.ok) == 1, outcome
    trial = next(Path(outcome.root).glob("*halve_targets*"))
    history = pd.read_csv(trial / "run" / "metrics.csv")
    assert history["perturbation_active"].tolist() == [False, False, True]
