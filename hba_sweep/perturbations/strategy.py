"""The base of every perturbation type: the epoch window, per-batch seeds, the row subset for
``perturb_fraction`` and device handling (the rules: :mod:`hba_sweep.perturbations`)."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch

__all__ = ["PerturbationStrategy", "Device", "Tensor", "Batch", "SUBSET_SEED_OFFSET", "target_stats", "draw_dtype"]

SUBSET_SEED_OFFSET = 500_000
"""Added to a type's batch seed to seed the row-subset generator (perturb_fraction < 1)."""

Device = torch.device | str | None
Tensor = torch.Tensor
Batch = tuple[torch.Tensor, torch.Tensor]  # (images, targets)


def target_stats(train_targets: np.ndarray | torch.Tensor) -> tuple[float, float]:
    """Scalar mean and std (ddof=0, in float32, as the published study) of all target values."""
    values = np.asarray(
        train_targets.detach().cpu().numpy() if isinstance(train_targets, torch.Tensor) else train_targets,
        dtype=np.float32,
    )
    if values.size == 0:
        raise ValueError("target_stats: no training targets given")
    return float(np.mean(values)), float(np.std(values))


def _batch_seed(perturb_seed: int, epoch: int, batch_idx: int) -> int:
    """The study's per-batch seed: ``perturb_seed + (epoch + 1) * 1000 + batch_idx``."""
    return perturb_seed + (epoch + 1) * 1000 + batch_idx


def _cpu_generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed)


def draw_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.is_floating_point() else torch.get_default_dtype()


def _merge_rows(
    original: torch.Tensor, replacement: torch.Tensor, rows: torch.Tensor | None, device: Device
) -> torch.Tensor:
    """``replacement`` on ``device`` (all rows), or a copy of ``original`` with ``rows`` replaced."""
    target_device = original.device if device is None else torch.device(device)
    replacement = replacement.to(device=target_device, dtype=original.dtype)
    if rows is None:
        return replacement
    out = original.to(device=target_device, copy=True)
    rows_dev = rows.to(target_device)
    out[rows_dev] = replacement[rows_dev]
    return out


class PerturbationStrategy:
    """Base class: an epoch window, per-batch seeds, the row subset and device handling."""

    type_name: ClassVar[str] = "base"
    changes_images: ClassVar[bool] = False
    seed_from_start_epoch: ClassVar[bool] = False
    """True: the batch seed uses ``perturb_epoch`` instead of the current epoch."""

    def __init__(
        self,
        perturb_epoch: int,
        perturb_length: int,
        perturb_seed: int,
        target_mean: float | None = None,
        target_std: float | None = None,
        perturb_fraction: float = 1.0,
    ) -> None:
        self.perturb_epoch = int(perturb_epoch)
        self.perturb_length = int(perturb_length)
        self.perturb_seed = int(perturb_seed)
        self.target_mean = None if target_mean is None else _scalar("target_mean", target_mean)
        self.target_std = None if target_std is None else _scalar("target_std", target_std)
        self.perturb_fraction = float(perturb_fraction)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(type={self.type_name!r}, epoch={self.perturb_epoch}, "
            f"length={self.perturb_length}, seed={self.perturb_seed}, "
            f"fraction={self.perturb_fraction})"
        )

    # -- schedule and seeds -------------------------------------------------------------
    def is_active_epoch(self, epoch: int) -> bool:
        """True iff ``perturb_epoch <= epoch < perturb_epoch + perturb_length``."""
        return self.perturb_epoch <= epoch < self.perturb_epoch + self.perturb_length

    def batch_seed(self, epoch_idx: int, batch_idx: int) -> int:
        """Seed of this type's per-batch generator (DESIGN.md rules)."""
        epoch = self.perturb_epoch if self.seed_from_start_epoch else epoch_idx
        return _batch_seed(self.perturb_seed, epoch, batch_idx)

    def generator(self, epoch_idx: int, batch_idx: int) -> torch.Generator:
        """A fresh CPU generator seeded with :meth:`batch_seed`."""
        return _cpu_generator(self.batch_seed(epoch_idx, batch_idx))

    def n_selected(self, batch_size: int) -> int:
        """``k = ceil(perturb_fraction * batch_size)`` rows perturbed per batch."""
        return min(batch_size, math.ceil(self.perturb_fraction * batch_size))

    def selected_rows(self, batch_size: int, epoch_idx: int, batch_idx: int) -> torch.Tensor:
        """Sorted CPU indices of the rows this batch perturbs (empty outside the window)."""
        if not self.is_active_epoch(epoch_idx):
            return torch.empty(0, dtype=torch.long)
        rows = self._subset(batch_size, epoch_idx, batch_idx)
        return torch.arange(batch_size) if rows is None else rows

    def _subset(self, batch_size: int, epoch_idx: int, batch_idx: int) -> torch.Tensor | None:
        """Selected rows, or None when the whole batch is perturbed (k == B)."""
        k = self.n_selected(batch_size)
        if k >= batch_size:
            return None
        g_sel = _cpu_generator(self.batch_seed(epoch_idx, batch_idx) + SUBSET_SEED_OFFSET)
        return torch.sort(torch.randperm(batch_size, generator=g_sel)[:k]).values

    # -- application --------------------------------------------------------------------
    def apply_to_batch(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        device: Device,
        epoch_idx: int,
        batch_idx: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Perturbed ``(images, targets)`` for this batch; the inputs themselves if inactive."""
        if not self.is_active_epoch(epoch_idx):
            return images, targets
        batch_size = _batch_size(images, targets)
        rows = self._subset(batch_size, epoch_idx, batch_idx)
        return self.perturb(images, targets, device, rows, epoch_idx, batch_idx)

    def perturb(
        self, images: Tensor, targets: Tensor, device: Device, rows: Tensor | None, epoch_idx: int, batch_idx: int
    ) -> Batch:
        """Default: copy ``rows`` (all if None) from the full-size replacement draws."""
        new_images = self.replacement_images(images, epoch_idx, batch_idx)
        new_targets = self.replacement_targets(targets, epoch_idx, batch_idx)
        if new_images is not None:
            images = _merge_rows(images, new_images, rows, device)
        if new_targets is not None:
            targets = _merge_rows(targets, new_targets, rows, device)
        return images, targets

    def replacement_images(self, images: torch.Tensor, epoch_idx: int, batch_idx: int) -> torch.Tensor | None:
        """Full-size replacement for ``images``, or None to leave them unchanged."""
        return None

    def replacement_targets(self, targets: torch.Tensor, epoch_idx: int, batch_idx: int) -> torch.Tensor | None:
        """Full-size replacement for ``targets``, or None to leave them unchanged."""
        return None


def _scalar(name: str, value: object) -> float:
    tensor = torch.as_tensor(value)
    if tensor.numel() != 1:
        raise ValueError(f"{name} must be a scalar (over all target values), got shape {tuple(tensor.shape)}")
    out = float(tensor.reshape(()).item())
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {out}")
    return out


def _batch_size(images: torch.Tensor | None, targets: torch.Tensor) -> int:
    batch = int(targets.shape[0])
    if isinstance(images, torch.Tensor) and int(images.shape[0]) != batch:
        raise ValueError(f"images ({images.shape[0]}) and targets ({batch}) differ in batch size")
    return batch
