"""The study's main grid: perturbation type x start epoch x window length x seed (ViT-L/14, OpenAI).

Data paths are placeholders under data/ (see data/README.md): put the THINGS images and CSVs
there or edit the paths in things_vitl14.yaml. `run --dry-run` works without them and lists what is missing.
"""

from ray import tune

NAME = "perturb_length"
BASE_CONFIG = "things_vitl14.yaml"  # model and data paths (see data/README.md)
PARAM_SPACE = {
    "perturb_type": tune.grid_search(["random_target", "label_shuffle", "image_noise", "uniform_images"]),
    "perturb_epoch": tune.grid_search([0, 2, 5, 10, 20, 30]),
    "perturb_length": tune.grid_search([1, 2, 5, 10]),
    "perturb_seed": tune.grid_search([42, 43]),
}
RESOURCES = {"cpu": 4, "gpu": 0.5}
MAX_FAILURES = 3
