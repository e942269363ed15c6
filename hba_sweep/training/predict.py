"""The one prediction loop, used by training-time evaluation and by inference and the analysis.

:func:`predict_batches` runs ``forward_from_prefix`` over batches of ``vision_prefix`` states (cached
prefix rows, or the prefix computed now from images) with the 66 prompts' text features computed
once, under the one precision rule (:func:`hba_sweep.foundation.devices.autocast`).
:class:`Predictor` is that loop for checkpoints: one model layout on one device, the frozen prefix of
each image set computed once (:mod:`hba_sweep.training.prefix_cache`, the cache training uses), then
per checkpoint only its adapters are loaded. ``model.forward`` on images stays the oracle the tests
compare with.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from hba_sweep.data.images import ImageStore
from hba_sweep.foundation.devices import autocast, precision_used
from hba_sweep.foundation.errors import CheckpointError
from hba_sweep.model import CLIPHBA, ModelSpec, create_model
from hba_sweep.training import prefix_cache
from hba_sweep.training.scoring import EvalSet, Row

Prefix = prefix_cache.CachedPrefix | prefix_cache.DevicePrefix


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host -> device copy; pinned and non-blocking on CUDA (a batch already on a GPU just moves)."""
    if batch.device.type != "cpu":
        return batch.to(device)
    if device.type == "cuda":
        batch = batch.pin_memory()
    return batch.to(device, non_blocking=True)


def prefix_rows(prefix: Prefix, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Cached prefix rows on ``device``: stored compactly (bf16 on CUDA), the adapted blocks compute in
    fp32 (or autocast)."""
    return to_device(prefix.rows(idx), device).float()


@torch.no_grad()
def predict_batches(
    model: CLIPHBA,
    inputs: Callable[[torch.Tensor], torch.Tensor],
    rows: torch.Tensor,
    batch_size: int,
    device: torch.device,
    precision: str,
) -> torch.Tensor:
    """(len(rows), 66) float32 predictions on the CPU, in eval mode; ``inputs(idx)`` gives the
    ``vision_prefix`` state of the rows ``idx``. The adapters are fixed here: text features once."""
    model.eval()
    out = []
    with autocast(device, precision):
        text = model.text_features()
    for start in range(0, len(rows), batch_size):
        idx = rows[start : start + batch_size]
        with autocast(device, precision):
            out.append(model.forward_from_prefix(inputs(idx), text).float().cpu())
    return torch.cat(out) if out else torch.empty(0, 66)


class Predictor:
    """One model layout on one device; frozen prefix per image set computed once (cached on disk)."""

    def __init__(
        self,
        spec: ModelSpec,
        device: torch.device | str = "cpu",
        cache_root: str | os.PathLike | None = None,
        batch_size: int = 64,
        precision: str = "fp32",
    ) -> None:
        self.spec = spec
        self.device = torch.device(device)
        self.model = create_model(spec).to(self.device).eval()
        self.cache_root = cache_root
        self.batch_size = batch_size
        self.precision = precision
        self.dtype = torch.bfloat16 if precision_used(self.device, precision) == "bf16" else torch.float32
        self._prefixes: dict[tuple[str, ...], Prefix] = {}  # by paths

    def prefix(self, paths: Sequence[Path]) -> Prefix:
        """The frozen vision prefix of ``paths`` (in order), computed once per image set."""
        key = tuple(map(str, paths))
        if key not in self._prefixes:

            def batches():
                return ImageStore(paths, self.model.image_size).batch

            prefix = prefix_cache.frozen_prefix(
                self.model,
                paths,
                batches,
                self.cache_root,
                self.dtype,
                self.device,
                self.batch_size,
                lambda: autocast(self.device, self.precision),
            )
            self._prefixes[key] = prefix_cache.hold_on_device(prefix, self.device)
        return self._prefixes[key]

    def load(self, adapters: Mapping[str, torch.Tensor], source: str = "<adapters>") -> None:
        try:
            self.model.load_adapter_state_dict(dict(adapters))
        except (ValueError, RuntimeError) as exc:  # other keys, or other shapes (rank)
            raise CheckpointError(
                f"{source}: {exc}. Fix: the model settings (backbone, adapter, vision_layers, "
                "transformer_layers, rank) must be those the checkpoint was trained with."
            ) from None
        except CheckpointError as exc:  # the other adapter kind
            raise CheckpointError(f"{source}: {exc}") from None

    def predict(self, paths: Sequence[Path]) -> np.ndarray:
        """(N, 66) float64 predictions of the loaded adapters for the images at ``paths``."""
        prefix = self.prefix(paths)
        predictions = predict_batches(
            self.model,
            lambda idx: prefix_rows(prefix, idx, self.device),
            torch.arange(len(paths)),
            self.batch_size,
            self.device,
            self.precision,
        )
        return predictions.numpy().astype(np.float64)

    def evaluate(
        self, adapters: Mapping[str, torch.Tensor], evalsets: Sequence[EvalSet], source: str = "<adapters>"
    ) -> dict[str, tuple[np.ndarray, list[Row]]]:
        """Predictions and score rows of one checkpoint on each evaluation set."""
        self.load(adapters, source)
        out = {}
        for es in evalsets:
            predictions = self.predict(es.paths)
            out[es.dataset] = (predictions, es.score(predictions))
        return out
