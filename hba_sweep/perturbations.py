"""Training-time perturbations: what happens to a batch inside the perturbation window.

A strategy is active for ``perturb_epoch <= epoch < perturb_epoch + perturb_length``
(type ``none`` never is). Outside the window ``apply_to_batch`` returns its inputs, the
same objects. Inside, it returns new tensors; inputs are never modified in place.

Seed rules (DESIGN.md, bit for bit). Every random draw uses a fresh CPU
``torch.Generator`` and is moved to ``device`` afterwards, so the numbers do not depend
on the device. Draws use the dtype of the tensor they replace (float32 in the study).

=================  ======================================================================
type               rule (B = batch size, g = per-batch generator)
=================  ======================================================================
none               nothing
random_target      targets <- ``randn(targets.shape, generator=g) * std + mean``; mean/std
                   are scalars over ALL training target values (see :func:`target_stats`);
                   seed ``perturb_seed + (epoch + 1) * 1000 + batch_idx``
label_shuffle      targets <- ``targets[randperm(B, generator=g)]``; seed
                   ``perturb_seed + (perturb_epoch + 1) * 1000 + batch_idx`` (the START
                   epoch: the same permutation in every epoch of the window, as published)
image_noise        images <- ``randn(images.shape, generator=g)``; seed as label_shuffle
uniform_images     images <- constant 0.5 (after normalisation)
blank_target       targets <- all zeros
=================  ======================================================================

``perturb_fraction`` f (0 < f <= 1) perturbs only ``k = ceil(f * B)`` rows of each batch.
The rows are ``sorted(randperm(B, generator=g_sel)[:k])`` where ``g_sel`` is a separate CPU
generator seeded with ``(the type's seed above) + 500_000`` (types without a draw use the
per-epoch seed ``perturb_seed + (epoch + 1) * 1000 + batch_idx``). When ``k == B`` the
subset generator is not used at all, so f = 1 (or any f with k == B) gives exactly the
rules above. For k < B:

- replacement types (random_target, image_noise, uniform_images, blank_target): the
  full-size draw is made exactly as for f = 1, and only the selected rows are copied
  from it; the other rows stay bit-identical.
- label_shuffle: the selected rows' targets are permuted among themselves,
  ``out[rows] = targets[rows[randperm(k, generator=g)]]`` (g seeded as above), so with
  ``k == B`` this is again ``targets[randperm(B, generator=g)]``.

:meth:`PerturbationStrategy.selected_rows` tells the training loop which rows change
(it runs the full, uncached image path for them when ``changes_images`` is True).

Registering a custom type, e.g. in a search-space file::

    import torch
    from hba_sweep.perturbations import PerturbationStrategy, register

    @register("target_scale")
    class TargetScale(PerturbationStrategy):
        '''Targets multiplied by 2 inside the window.'''

        def replacement_targets(self, targets, epoch_idx, batch_idx):
            return targets * 2

    # search space: {"perturb_type": "target_scale", ...}

Subclasses override ``replacement_images`` and/or ``replacement_targets`` (return a
full-size CPU or device tensor, or None for "unchanged"; use ``self.generator(epoch_idx,
batch_idx)`` for seeded draws) and set ``changes_images = True`` when images are
replaced; the base class handles the window, the fraction and the device. For anything
else override ``perturb``.
"""

from __future__ import annotations

import math
from typing import Callable, ClassVar

import numpy as np
import torch

from hba_sweep.foundation.errors import ConfigError

__all__ = [
    "PerturbationStrategy",
    "NoPerturbation",
    "TargetNoisePerturbation",
    "LabelShufflePerturbation",
    "ImageNoisePerturbation",
    "UniformImagePerturbation",
    "BlankTargetPerturbation",
    "register",
    "registered_types",
    "choose_perturbation_strategy",
    "target_stats",
    "SUBSET_SEED_OFFSET",
]

SUBSET_SEED_OFFSET = 500_000
"""Added to a type's batch seed to seed the row-subset generator (perturb_fraction < 1)."""

_REGISTRY: dict[str, type["PerturbationStrategy"]] = {}

Device = torch.device | str | None


def register(name: str) -> Callable[[type["PerturbationStrategy"]], type["PerturbationStrategy"]]:
    """Class decorator: make a :class:`PerturbationStrategy` subclass available as ``name``.

    Re-registering the same class (e.g. a search-space file imported twice) is allowed;
    taking a name already used by a different class raises ConfigError.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"perturbation type name must be a non-empty string, got {name!r}")
    key = name.strip().lower()

    def decorate(cls: type[PerturbationStrategy]) -> type[PerturbationStrategy]:
        if not (isinstance(cls, type) and issubclass(cls, PerturbationStrategy)):
            raise ConfigError(
                f"@register({name!r}) must decorate a PerturbationStrategy subclass, got {cls!r}"
            )
        old = _REGISTRY.get(key)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ConfigError(
                f"perturbation type {key!r} is already registered by "
                f"{old.__module__}.{old.__qualname__}; choose another name"
            )
        cls.type_name = key
        _REGISTRY[key] = cls
        return cls

    return decorate


def registered_types() -> set[str]:
    """Names accepted as ``perturb_type``."""
    return set(_REGISTRY)


def user_types() -> dict[str, type["PerturbationStrategy"]]:
    """The types registered outside this module (e.g. by a search-space file), name -> class."""
    return {name: cls for name, cls in _REGISTRY.items() if cls.__module__ != __name__}


def register_types(types: dict[str, type["PerturbationStrategy"]]) -> None:
    """Register classes from :func:`user_types` in another process (a Ray worker)."""
    for name, cls in types.items():
        register(name)(cls)


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


def _draw_dtype(x: torch.Tensor) -> torch.dtype:
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
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        device: Device,
        rows: torch.Tensor | None,
        epoch_idx: int,
        batch_idx: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
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
        noise = torch.randn(tuple(targets.shape), generator=g, dtype=_draw_dtype(targets))
        return noise * self.target_std + self.target_mean


@register("label_shuffle")
class LabelShufflePerturbation(PerturbationStrategy):
    """Targets permuted within the batch; the permutation is seeded by the START epoch."""

    seed_from_start_epoch = True

    def perturb(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        device: Device,
        rows: torch.Tensor | None,
        epoch_idx: int,
        batch_idx: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
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
        return torch.randn(tuple(images.shape), generator=g, dtype=_draw_dtype(images))


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


def choose_perturbation_strategy(
    perturb_type: str | None,
    perturb_epoch: int,
    perturb_length: int,
    perturb_seed: int,
    target_mean: float | torch.Tensor | None = None,
    target_std: float | torch.Tensor | None = None,
    perturb_fraction: float = 1.0,
) -> PerturbationStrategy:
    """The strategy registered as ``perturb_type`` (case-insensitive; None means 'none')."""
    key = "none" if perturb_type is None else str(perturb_type).strip().lower()
    cls = _REGISTRY.get(key)
    if cls is None:
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigError(
            f"perturb_type: unknown perturbation type {perturb_type!r}; known types: {known} "
            "(register your own with @hba_sweep.perturbations.register(name))"
        )
    fraction = float(perturb_fraction)
    if not (0.0 < fraction <= 1.0):
        raise ConfigError(f"perturb_fraction: must be in (0, 1], got {perturb_fraction!r}")
    if int(perturb_length) < 0:
        raise ConfigError(f"perturb_length: must be >= 0, got {perturb_length!r}")
    return cls(
        perturb_epoch=perturb_epoch,
        perturb_length=perturb_length,
        perturb_seed=perturb_seed,
        target_mean=target_mean,
        target_std=target_std,
        perturb_fraction=fraction,
    )
