"""The published configs' key rules: the one table of published spellings (training config,
inference config and the published run folders' training_config.yaml), keys that only steer the
published code (ignored here, named once), keys checked against the one supported value, and the
``'5ep'`` epoch durations."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Keys of the published training_config.yaml / inference_config.yaml spelled otherwise here:
# published key -> our key. Each reader takes the entries naming one of its own keys (aliases_into).
PUBLISHED_KEYS = {
    "inference_annotations_file": "annotations_file",
    "clip_hba_backbone": "backbone",
    "max_duration": "epochs",
    "rsa_things_img_dir": "rsa_img_dir",
    "behavioral_rdm48_file": "behavioral_rdm_file",
    "checkpoint_path": "save_path",
    "cuda": "device",
    "lr_warmup_duration": "lr_warmup_epochs",
    "bootstrap": "n_bootstrap",
}


def aliases_into(names: Iterable[str]) -> dict[str, str]:
    """The published spellings of a reader's keys ``names``: published key -> our key."""
    own = set(names)
    return {published: ours for published, ours in PUBLISHED_KEYS.items() if ours in own}


def published_name(ours: str) -> str:
    """The key the published files use for our key ``ours`` (itself where the spelling is the same)."""
    return next((published for published, name in PUBLISHED_KEYS.items() if name == ours), ours)


# Keys of the published training_config.yaml that steer only the published code (logging, its
# W&B extras, multi-GPU); accepted and reported once as ignored.
TRAIN_IGNORED = {
    "debug_logging": "prints tensors of the first batch each epoch in the published code",
    "logger": "the published code's logger choice; this tool logs to stderr and metrics.csv",
    "wandb_tags": "W&B run tags",
    "wandb_notes": "W&B run notes",
    "wandb_run_name": "W&B run name",
    "wandb_run_id": "W&B run id",
    "wandb_watch_model": "W&B gradient watching",
    "wandb_log_freq": "W&B log frequency",
    "pin_memory": "DataLoader pinning (this tool pins on CUDA itself)",
    "use_ddp": "multi-GPU DDP (one GPU per run here; run a sweep for parallelism)",
    "num_classes": "classes of scratch training (not supported)",
}
# Keys of the published inference_config.yaml that change nothing here.
INFER_IGNORED = {
    "load_hba": "the published script's switch between CLIP-HBA and plain CLIP; CLIP-HBA checkpoints are what is evaluated",
    "num_workers": "DataLoader worker count (images are decoded in-process)",
    "cka_unbiased": "both the biased and the unbiased CKA are always reported",
}
# Keys checked against the one value this tool supports (the published finetune mode).
TRAIN_CHECKED = {"training_mode": "finetune", "architecture": "clip-hba"}


def epoch_duration(value: Any, key: str = "max_duration") -> int:
    """``500`` or ``'500ep'`` -> 500 (the published ``parse_epoch_duration``); ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{key} must be a number of epochs such as 5 or '5ep'")
    text = str(value).strip().lower()
    text = text[:-2] if text.endswith("ep") else text
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{key} must be a number of epochs such as 5 or '5ep'") from None
    if not number.is_integer():
        raise ValueError(f"{key} must be a whole number of epochs")
    return int(number)


def check_training_mode(raw: dict[str, Any], source: str) -> list[str]:
    """Problems with the published keys whose one supported value is fixed (training_mode, architecture)."""
    problems = []
    for key, wanted in TRAIN_CHECKED.items():
        if key in raw and raw[key] is not None and str(raw[key]).strip().lower() != wanted:
            problems.append(
                f"{source}: {key}={raw[key]!r} is not supported: this tool fine-tunes CLIP-HBA with DoRA "
                f"(the published training_mode: finetune, architecture: CLIP-HBA). Fix: set {key}: "
                f"{'finetune' if key == 'training_mode' else 'CLIP-HBA'}; training from scratch is not supported."
            )
    return problems
