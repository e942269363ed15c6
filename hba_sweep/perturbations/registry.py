"""Perturbation types by name: :func:`register` (a class decorator, also for types a search-space
file defines), the registered names, and :func:`choose_perturbation_strategy`."""

from __future__ import annotations

from collections.abc import Callable

import torch

from hba_sweep.foundation.errors import ConfigError
from hba_sweep.perturbations.strategy import PerturbationStrategy

__all__ = ["register", "registered_types", "user_types", "register_types", "choose_perturbation_strategy"]

BUILTIN_MODULE = "hba_sweep.perturbations.builtin"  # the types shipped with the product (not sent to Ray workers)
_REGISTRY: dict[str, type[PerturbationStrategy]] = {}


def register(name: str) -> Callable[[type[PerturbationStrategy]], type[PerturbationStrategy]]:
    """Class decorator: make a :class:`PerturbationStrategy` subclass available as ``name``.

    Re-registering the same class (e.g. a search-space file imported twice) is allowed;
    taking a name already used by a different class raises ConfigError.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"perturbation type name must be a non-empty string, got {name!r}")
    key = name.strip().lower()

    def decorate(cls: type[PerturbationStrategy]) -> type[PerturbationStrategy]:
        if not (isinstance(cls, type) and issubclass(cls, PerturbationStrategy)):
            raise ConfigError(f"@register({name!r}) must decorate a PerturbationStrategy subclass, got {cls!r}")
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


def user_types() -> dict[str, type[PerturbationStrategy]]:
    """The types registered outside this module (e.g. by a search-space file), name -> class."""
    return {name: cls for name, cls in _REGISTRY.items() if cls.__module__ != BUILTIN_MODULE}


def register_types(types: dict[str, type[PerturbationStrategy]]) -> None:
    """Register classes from :func:`user_types` in another process (a Ray worker)."""
    for name, cls in types.items():
        register(name)(cls)


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
