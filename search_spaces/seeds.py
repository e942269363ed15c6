"""Seed variability: baselines and one perturbation over several init and perturbation seeds."""

from ray import tune

NAME = "seeds"
BASE_CONFIG = "things_vitl14.yaml"  # model and data paths (see data/README.md)
PARAM_SPACE = {
    "epochs": 30,
    "random_seed": tune.grid_search([1, 2, 3, 4, 5]),
    "perturb_type": tune.grid_search(["none", "random_target"]),
    "perturb_epoch": 5,
    "perturb_length": 5,
    "perturb_seed": tune.grid_search([42, 43, 44]),
}
RESOURCES = {"cpu": 4, "gpu": 0.5}
