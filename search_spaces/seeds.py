"""Seed variability: baselines and one perturbation over several init and perturbation seeds."""

from ray import tune

NAME = "seeds"
BASE_CONFIG = {
    "backbone": "ViT-L/14",
    "pretrained": "openai",
    "epochs": 30,
    "img_dir": "data/things/images",
    "img_annotations_file": "data/things/spose_embedding66d_rescaled_1806train.csv",
    "rsa_annotations_file": "data/things/spose_embedding66d_rescaled_48val_reordered.csv",
    "rsa_img_dir": "data/things/images48",
    "behavioral_rdm_file": "data/things/RDM48_triplet.mat",
}
PARAM_SPACE = {
    "random_seed": tune.grid_search([1, 2, 3, 4, 5]),
    "perturb_type": tune.grid_search(["none", "random_target"]),
    "perturb_epoch": 5,
    "perturb_length": 5,
    "perturb_seed": tune.grid_search([42, 43, 44]),
}
RESOURCES = {"cpu": 4, "gpu": 0.5}
