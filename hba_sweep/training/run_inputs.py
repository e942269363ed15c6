"""What a run trains on: the model (its forward plan decided once by the factory), the training and
behavioural-RSA image sets, their reference RDMs, and the frozen prefix attached where caching is exact."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hba_sweep.config import TrainConfig
from hba_sweep.data.rdm_io import load_rdm
from hba_sweep.data.things import ThingsDataset
from hba_sweep.foundation.devices import autocast, precision_used
from hba_sweep.model import CLIPHBA, create_model
from hba_sweep.perturbations import PerturbationStrategy, choose_perturbation_strategy, target_stats
from hba_sweep.rsa import compute_model_rdm
from hba_sweep.training import prefix_cache
from hba_sweep.training.predict import prefix_rows, to_device

__all__ = ["Images", "RSAImages", "build_model_and_data", "run_strategy"]


@dataclass
class Images:
    """An image set the loop can feed: normalised batches, and the cached prefix if enabled."""

    dataset: ThingsDataset
    prefix: prefix_cache.CachedPrefix | prefix_cache.DevicePrefix | None = None

    def inputs(self, model: CLIPHBA, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
        """What enters the adapted blocks: cached prefix rows, or the frozen prefix run now."""
        if self.prefix is not None:
            return prefix_rows(self.prefix, idx, device)
        return model.vision_prefix(to_device(self.dataset.images(idx), device))


def run_strategy(cfg: TrainConfig, train_targets: np.ndarray | torch.Tensor) -> PerturbationStrategy:
    """The run's perturbation strategy: its type, window, seed and fraction, with the scalar mean/std of ALL
    target values of the training file (published)."""
    mean, std = target_stats(train_targets)
    return choose_perturbation_strategy(
        cfg.perturb_type,
        cfg.perturb_epoch,
        cfg.perturb_length,
        cfg.perturb_seed,
        target_mean=mean,
        target_std=std,
        perturb_fraction=cfg.perturb_fraction,
    )


def load_images(cfg: TrainConfig, annotations: str, img_dir: str, image_size: int) -> ThingsDataset:
    return ThingsDataset(annotations, img_dir, image_size, in_memory=cfg.keep_images_in_memory)


def attach_prefix(
    images: Images,
    model: CLIPHBA,
    cfg: TrainConfig,
    device: torch.device,
    dtype: torch.dtype,
    log: Callable[[str], None],
) -> None:
    """Compute (or load) the frozen vision prefix of every image once."""
    ds = images.dataset
    root = cfg.cache_dir if cfg.cache_dir is not None else Path(cfg.save_path) / "prefix_cache"
    prefix = prefix_cache.frozen_prefix(
        model,
        ds.image_paths,
        lambda: ds.images,
        root,
        dtype,
        device,
        cfg.batch_size,
        lambda: autocast(device, cfg.precision),
        on_compute=lambda n: log(f"computing the frozen prefix of {n} images ({ds.annotations_file.name}) once"),
    )
    images.prefix = prefix_cache.hold_on_device(prefix, device, log=log) if cfg.prefix_on_gpu else prefix


# ---- precision and device ---------------------------------------------------------------
def cache_dtype(device: torch.device, cfg: TrainConfig) -> torch.dtype:
    if cfg.cache_dtype == "auto":
        return torch.bfloat16 if precision_used(device, cfg.precision) == "bf16" else torch.float32
    return getattr(torch, cfg.cache_dtype)


PREFIX_STEM = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "patch_dropout")


def caching_allowed(cfg: TrainConfig, model: CLIPHBA) -> tuple[bool, str]:
    """Whether the frozen prefix may be cached, and why not."""
    if not cfg.cache_frozen_prefix:
        return False, "cache_frozen_prefix is false"
    if model.vision_split == 0:
        return False, "every vision block is adapted: there is no frozen prefix"
    if any(p.requires_grad for n, p in model.named_parameters() if _in_prefix(n, model.vision_split)):
        return False, "part of the vision prefix is trainable"
    return True, ""


def _in_prefix(name: str, split: int) -> bool:
    """Whether a parameter belongs to the vision blocks before the first adapted one."""
    parts = name.split(".")
    if parts[:2] != ["clip", "visual"]:
        return False
    if parts[2] in PREFIX_STEM:
        return True
    return parts[2:4] == ["transformer", "resblocks"] and int(parts[4]) < split


@dataclass
class RSAImages:
    """The behavioural-RSA images and their two references: the triplet RDM and the RDM of their
    own SPoSE targets (``model_rdm_distance_metric`` of the targets: 1 - Pearson by default)."""

    images: Images
    triplet_rdm: np.ndarray
    target_rdm: np.ndarray


def build_model_and_data(
    cfg: TrainConfig, device: torch.device, log: Callable[[str], None]
) -> tuple[CLIPHBA, Images, RSAImages | None]:
    """The model, the training images and (if enabled) the RSA images with their reference RDM,
    with the frozen prefix attached where caching is exact."""
    model = create_model(cfg.model_spec, cfg.forward_plan).to(device)  # the plan: cache_frozen_prefix
    train = Images(load_images(cfg, cfg.img_annotations_file, cfg.img_dir, model.image_size))
    rsa = None
    if cfg.behavioral_rsa:
        rsa_images = Images(load_images(cfg, cfg.rsa_annotations_file, cfg.rsa_img_dir, model.image_size))
        rsa = RSAImages(
            rsa_images,
            load_rdm(cfg.behavioral_rdm_file, n=len(rsa_images.dataset)),
            compute_model_rdm(rsa_images.dataset.targets.numpy(), cfg.model_rdm_distance_metric),
        )
    use_cache, why = caching_allowed(cfg, model)
    if not use_cache:
        log(f"frozen-prefix cache off: {why}")
        return model, train, rsa
    for images in [train] + ([rsa.images] if rsa else []):
        attach_prefix(images, model, cfg, device, cache_dtype(device, cfg), log)
    return model, train, rsa
