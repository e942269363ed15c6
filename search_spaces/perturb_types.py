"""Every perturbation type at a few windows, one seed (ViT-L/14, OpenAI; placeholder data paths)."""

from ray import tune

NAME = "perturb_types"
BASE_CONFIG = "things_vitl14.yaml"  # model and data paths (see data/README.md)
PARAM_SPACE = {
    "epochs": 30,
    "perturb_type": tune.grid_search(["random_target", "label_shuffle", "image_noise", "uniform_images"]),
    "perturb_epoch": tune.grid_search([0, 5, 15]),
    "perturb_length": 5,
}
RESOURCES = {"cpu": 4, "gpu": 0.5}
