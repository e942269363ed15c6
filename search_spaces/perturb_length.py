"""The study's main grid: perturbation type x start epoch x window length x seed (ViT-L/14, OpenAI).

Data paths are placeholders under data/ (see data/README.md): put the THINGS images and CSVs
there or edit the paths below. `run --dry-run` works without them and lists what is missing.
"""

from ray import tune

NAME = "perturb_length"
BASE_CONFIG = {
    "backbone": "ViT-L/14",
    "pretrained": "openai",
    "vision_layers": 2,
    "transformer_layers": 1,
    "rank": 32,
    "epochs": 50,
    "batch_size": 64,
    "lr": 3e-4,
    "random_seed": 1,
    "train_portion": 0.8,
    "early_stopping_patience": 20,
    # placeholders: edit to where the data lives (relative paths are relative to where you run)
    "img_dir": "data/things/images",
    "img_annotations_file": "data/things/spose_embedding66d_rescaled_1806train.csv",
    "rsa_annotations_file": "data/things/spose_embedding66d_rescaled_48val_reordered.csv",
    "rsa_img_dir": "data/things/images48",
    "behavioral_rdm_file": "data/things/RDM48_triplet.mat",
}
PARAM_SPACE = {
    "perturb_type": tune.grid_search(["random_target", "label_shuffle", "image_noise", "uniform_images"]),
    "perturb_epoch": tune.grid_search([0, 2, 5, 10, 20, 30]),
    "perturb_length": tune.grid_search([1, 2, 5, 10]),
    "perturb_seed": tune.grid_search([42, 43]),
}
RESOURCES = {"cpu": 4, "gpu": 0.5}
MAX_FAILURES = 3
