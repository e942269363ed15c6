"""Hyperparameter search with Optuna (lr, rank, vision_layers, dora_alpha) under ASHA.

METRIC can be "val_loss" (MODE "min") or "behavioral_rsa_rho" (MODE "max"). Trials come from the
searcher, so nothing forks from a baseline here. Data paths are placeholders (data/README.md).
"""

from ray import tune

NAME = "hparams_optuna"
BASE_CONFIG = "things_vitl14.yaml"  # model and data paths (see data/README.md)
PARAM_SPACE = {
    "epochs": 30,
    "lr": tune.loguniform(1e-5, 3e-3),
    "rank": tune.choice([4, 8, 16, 32, 64]),
    "vision_layers": tune.choice([1, 2, 4, 8]),
    "dora_alpha": tune.choice([4.0, 8.0, 16.0, 32.0, 64.0]),
}
METRIC = "val_loss"
MODE = "min"
NUM_SAMPLES = 40
MAX_CONCURRENT = 4


def SEARCH_ALG():
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(seed=0)


def SCHEDULER():
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="training_iteration", max_t=31, grace_period=5, reduction_factor=3)


RESOURCES = {"cpu": 4, "gpu": 0.5}
