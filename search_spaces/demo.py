"""The embedded demo study: generated data, the tiny backbone, CPU, a few minutes on 2 cores.

2 init seeds x 2 perturbation types x 2 windows = 8 perturbed trials plus 2 baselines; each
perturbed trial forks from its seed's baseline. Demo data is generated on first use in
data/demo/ (or $HBA_DEMO_DATA).
"""

import os
from pathlib import Path

from ray import tune

_DATA = Path(os.environ.get("HBA_DEMO_DATA") or Path(__file__).resolve().parent.parent / "data" / "demo")

NAME = "demo"
BASE_CONFIG = str(_DATA / "train.yaml")  # written by PREPARE: hba-tiny, 64 px, 480 images
EVALSETS = str(_DATA / "evalsets.yaml")


def PREPARE():
    """Generate the demo data if it is missing (deterministic; reused when present)."""
    from hba_sweep.training.demo_data import make_demo_data

    make_demo_data(_DATA)


PARAM_SPACE = {
    "backbone": "hba-tiny",
    "pretrained": "none",
    "device": "cpu",
    "epochs": 4,
    "random_seed": tune.grid_search([1, 2]),
    "perturb_type": tune.grid_search(["label_shuffle", "random_target"]),
    "perturb_epoch": tune.grid_search([1, 2]),
    "perturb_length": 1,
    "perturb_seed": 42,
}
RESOURCES = {"cpu": 1}
MAX_FAILURES = 2
