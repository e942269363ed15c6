"""The published "critical period" sweep: a length-1 perturbation at every epoch of a baseline.

Every trial forks from the baseline after the epoch before its window, so each costs only the
epochs from its window on. Data paths are placeholders (see data/README.md).
"""

from ray import tune

NAME = "single_epoch"
_EPOCHS = 30
BASE_CONFIG = "things_vitl14.yaml"  # model and data paths (see data/README.md)
PARAM_SPACE = {
    "epochs": _EPOCHS,
    "early_stopping_patience": 0,  # every epoch of the baseline must exist to fork from
    "perturb_type": tune.grid_search(["random_target"]),
    "perturb_epoch": tune.grid_search(list(range(_EPOCHS))),
    "perturb_length": 1,
    "perturb_seed": 42,
}
RESOURCES = {"cpu": 4, "gpu": 0.5}
