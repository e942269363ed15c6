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

:meth:`PerturbationStrategy.selected_rows` names the rows a batch perturbs and the class
attribute ``changes_images`` says whether a type may replace images (both describe a type; tests
check them against what ``apply_to_batch`` does). The training loop does not rely on either: it
runs the full, uncached image path for every row whose image ``apply_to_batch`` changed.

Modules: ``strategy`` (the base class), ``registry`` (names -> types), ``builtin`` (the study's types).

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
replaced (a description: the loop finds the changed rows itself); the base class handles the window, the fraction and the device. For anything
else override ``perturb``.
"""

from hba_sweep.perturbations.builtin import (
    BlankTargetPerturbation,
    ImageNoisePerturbation,
    LabelShufflePerturbation,
    NoPerturbation,
    TargetNoisePerturbation,
    UniformImagePerturbation,
)
from hba_sweep.perturbations.registry import (
    choose_perturbation_strategy,
    register,
    register_types,
    registered_types,
    user_types,
)
from hba_sweep.perturbations.strategy import SUBSET_SEED_OFFSET, PerturbationStrategy, target_stats

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
    "user_types",
    "register_types",
    "choose_perturbation_strategy",
    "target_stats",
    "SUBSET_SEED_OFFSET",
]
