"""The frozen-prefix cache: activations entering the first adapted vision block, per image.

The blocks before the first adapter never change and no augmentation is applied, so their
output per image is the same in every epoch, trial and checkpoint of a study (DESIGN.md,
trap 4). They are computed once and stored as ``<root>/<key>.npy``; every process on a node
memory-maps the same file (no copy per trial). The key covers the backbone, its weights,
the layer split, the image size, the image set (paths, sizes, mtimes) and the dtype.
A file lock makes concurrent trials compute a missing entry once.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from hba_sweep.io_utils import atomic_write

_STORAGE = {torch.float32: (np.float32, None), torch.bfloat16: (np.int16, torch.bfloat16)}


def image_set_fingerprint(paths: Sequence[str | os.PathLike], image_size: int) -> str:
    """Identifies an ordered image set at one resolution (path, size and mtime of each file)."""
    digest = hashlib.sha256(f"size={image_size}".encode())
    for path in paths:
        st = os.stat(path)
        digest.update(f"|{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class CachedPrefix:
    """Row access to a cached prefix array; ``rows(idx)`` returns a fresh torch tensor."""

    def __init__(self, array: np.ndarray, view_as: torch.dtype | None) -> None:
        self.array = array
        self.view_as = view_as

    def __len__(self) -> int:
        return self.array.shape[0]

    def rows(self, indices: torch.Tensor | Sequence[int]) -> torch.Tensor:
        idx = np.asarray(indices, dtype=np.int64)
        out = torch.from_numpy(np.ascontiguousarray(self.array[idx]))
        return out.view(self.view_as) if self.view_as is not None else out


def compute_prefix(prefix_fn: Callable[[torch.Tensor], torch.Tensor], batches: Callable[[Sequence[int]], torch.Tensor],
                   n: int, dtype: torch.dtype, device: torch.device, batch_size: int) -> torch.Tensor:
    """Run the frozen prefix over images 0..n-1 in batches; result on CPU in ``dtype``."""
    parts = []
    for start in range(0, n, batch_size):
        images = batches(range(start, min(n, start + batch_size))).to(device, non_blocking=True)
        parts.append(prefix_fn(images).to("cpu", dtype))
    return torch.cat(parts)


def load_or_compute(root: str | os.PathLike | None, key: str, compute: Callable[[], torch.Tensor],
                    dtype: torch.dtype) -> CachedPrefix:
    """The cached prefix for ``key``: memory-mapped from ``root`` if there, else computed (and stored)."""
    np_dtype, view_as = _STORAGE[dtype]
    if root is None:
        tensor = compute()
        return CachedPrefix(tensor.view(torch.int16).numpy() if view_as else tensor.numpy(), view_as)
    path = Path(root) / f"{key}.npy"
    with _locked(path.with_suffix(".lock")):
        if not path.is_file():
            tensor = compute()
            array = tensor.view(torch.int16).numpy() if view_as else tensor.numpy()
            atomic_write(path, lambda fh: np.save(fh, array.astype(np_dtype, copy=False)))
    return CachedPrefix(np.load(path, mmap_mode="r"), view_as)


def cache_key(prefix_key: str, fingerprint: str, dtype: torch.dtype) -> str:
    return f"prefix-{prefix_key}-{fingerprint}-{str(dtype).removeprefix('torch.')}"


def frozen_prefix(model: torch.nn.Module, paths: Sequence[str | os.PathLike],
                  make_batches: Callable[[], Callable[[Sequence[int]], torch.Tensor]], root: str | os.PathLike | None,
                  dtype: torch.dtype, device: torch.device, batch_size: int, autocast: Callable[[], object],
                  on_compute: Callable[[int], None] | None = None) -> CachedPrefix:
    """The frozen vision prefix of the images at ``paths`` for a CLIPHBA ``model``: loaded from
    ``root`` when an entry with the same key exists, else computed once and stored.

    ``make_batches()`` returns the function giving normalised images by index (called only
    when computing, so cached image sets are not decoded); ``autocast()`` gives the precision
    context; ``on_compute(n)`` is told when n images are run (a log line, a counter).
    """
    key = cache_key(model.prefix_key(), image_set_fingerprint(paths, model.image_size), dtype)

    def compute() -> torch.Tensor:
        if on_compute is not None:
            on_compute(len(paths))
        with autocast():
            return compute_prefix(model.vision_prefix, make_batches(), len(paths), dtype, device, batch_size)

    return load_or_compute(root, key, compute, dtype)
