"""Every perturbation type at a few windows, one seed (ViT-L/14, OpenAI; placeholder data paths)."""

from ray import tune

NAME = "perturb_types"
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
    "perturb_type": tune.grid_search(["random_target", "label_shuffle", "image_noise", "uniform_images"]),
    "perturb_epoch": tune.grid_search([0, 5, 15]),
    "perturb_length": 5,
}
RESOURCES = {"cpu": 4, "gpu": 0.5}
