"""The published configs' key rules: keys that only steer the published code (ignored here, named
once), keys checked against the one supported value, and the ``'5ep'`` epoch durations."""

from __future__ import annotations

from typing import Any

# Keys of the published training_config.yaml that steer only the published code (logging, its
# W&B extras, multi-GPU); accepted and reported once as ignored.
TRAIN_IGNORED = {
    "debug_logging": "prints tensors of the first batch each epoch in the published code",
    "logger": "the published code's logger choice; this tool logs to stderr and metrics.csv",
    "wandb_tags": "W&B run tags", "wandb_notes": "W&B run notes", "wandb_run_name": "W&B run name",
    "wandb_run_id": "W&B run id", "wandb_watch_model": "W&B gradient watching", "wandb_log_freq": "W&B log frequency",
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
                f"{'finetune' if key == 'training_mode' else 'CLIP-HBA'}; training from scratch is not supported.")
    return problems
