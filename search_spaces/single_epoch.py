"""The published "critical period" sweep: a length-1 perturbation at every epoch of a baseline.

Every trial forks from the baseline after the epoch before its window, so each costs only the
epochs from its window on. Data paths are placeholders (see data/README.md).
"""

from ray import tune

NAME = "single_epoch"
_EPOCHS = 30
BASE_CONFIG = {
    "backbone": "ViT-L/14",
    "pretrained": "openai",
    "vision_layers": 2,
    "transformer_layers": 1,
    "rank": 32,
    "epochs": _EPOCHS,
    "lr": 3e-4,
    "early_stopping_patience": 0,  # every epoch of the baseline must exist to fork from
    "img_dir": "data/things/images",
    "img_annotations_file": "data/things/spose_embedding66d_rescaled_1806train.csv",
    "rsa_annotations_file": "data/things/spose_embedding66d_rescaled_48val_reordered.csv",
    "rsa_img_dir": "data/things/images48",
    "behavioral_rdm_file": "data/things/RDM48_triplet.mat",
}
PARAM_SPACE = {
    "perturb_type": tune.grid_search(["random_target"]),
    "perturb_epoch": tune.grid_search(list(range(_EPOCHS))),
    "perturb_length": 1,
    "perturb_seed": 42,
}
RESOURCES = {"cpu": 4, "gpu": 0.5}
