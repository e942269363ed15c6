"""The perturbation types of the study (DESIGN.md's seed rules; the table: :mod:`hba_sweep.perturbations`)."""

from __future__ import annotations

import torch

from hba_sweep.perturbations.registry import register
from hba_sweep.perturbations.strategy import Batch, Device, PerturbationStrategy, Tensor, draw_dtype


@register("none")
class NoPerturbation(PerturbationStrategy):
    """No perturbation: never active."""

    def is_active_epoch(self, epoch: int) -> bool:
        """Always False."""
        return False


@register("random_target")
class TargetNoisePerturbation(PerturbationStrategy):
    """Targets replaced by ``randn * std + mean`` (per-epoch, per-batch seed)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.target_mean is None or self.target_std is None:
            raise ValueError(
                "perturb_type 'random_target' needs target_mean and target_std: the scalar "
                "mean and std of all training target values (see hba_sweep.perturbations.target_stats)"
            )
        if self.target_std < 0:
            raise ValueError(f"target_std must be >= 0, got {self.target_std}")

    def replacement_targets(self, targets: torch.Tensor, epoch_idx: int, batch_idx: int) -> torch.Tensor:
        """``randn(targets.shape, generator=g) * std + mean`` on CPU."""
        g = self.generator(epoch_idx, batch_idx)
        noise = torch.randn(tuple(targets.shape), generator=g, dtype=draw_dtype(targets))
        return noise * self.target_std + self.target_mean


@register("label_shuffle")
class LabelShufflePerturbation(PerturbationStrategy):
    """Targets permuted within the batch; the permutation is seeded by the START epoch."""

    seed_from_start_epoch = True

    def perturb(
        self, images: Tensor, targets: Tensor, device: Device, rows: Tensor | None, epoch_idx: int, batch_idx: int
    ) -> Batch:
        """``targets[randperm(B)]``, or the selected rows permuted among themselves."""
        g = self.generator(epoch_idx, batch_idx)
        target_device = targets.device if device is None else torch.device(device)
        if rows is None:
            perm = torch.randperm(int(targets.shape[0]), generator=g)
            return images, targets[perm.to(targets.device)].to(target_device)
        perm = torch.randperm(int(rows.numel()), generator=g)
        out = targets.to(device=target_device, copy=True)
        src = targets[rows[perm].to(targets.device)].to(target_device)
        out[rows.to(target_device)] = src
        return images, out


@register("image_noise")
class ImageNoisePerturbation(PerturbationStrategy):
    """Images replaced by standard normal noise (seeded by the START epoch)."""

    changes_images = True
    seed_from_start_epoch = True

    def replacement_images(self, images: torch.Tensor, epoch_idx: int, batch_idx: int) -> torch.Tensor:
        """``randn(images.shape, generator=g)`` on CPU (randn_like with a generator)."""
        g = self.generator(epoch_idx, batch_idx)
        return torch.randn(tuple(images.shape), generator=g, dtype=draw_dtype(images))


@register("uniform_images")
class UniformImagePerturbation(PerturbationStrategy):
    """Images replaced by a constant 0.5 tensor (in normalised space)."""

    changes_images = True

    def replacement_images(self, images: torch.Tensor, epoch_idx: int, batch_idx: int) -> torch.Tensor:
        """A 0.5 tensor of the images' shape and dtype, on their device."""
        return torch.full(tuple(images.shape), 0.5, dtype=images.dtype, device=images.device)


@register("blank_target")
class BlankTargetPerturbation(PerturbationStrategy):
    """Targets replaced by zeros."""

    def replacement_targets(self, targets: torch.Tensor, epoch_idx: int, batch_idx: int) -> torch.Tensor:
        """All-zero targets of the same shape and dtype."""
        return torch.zeros_like(targets)
