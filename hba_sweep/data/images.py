"""The study's image transform, uint8 decoding and an in-memory image store.

The oracle is :func:`build_transform` (``Resize((S, S))``, ``ToTensor``, ``Normalize``), exactly
the published study's transform. The fast path decodes and resizes each image once to uint8
(:func:`load_image_uint8`) and normalises whole batches at once (:func:`normalize_uint8`); both
paths give the same numbers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision import transforms

from hba_sweep.foundation.errors import DataError

IMAGE_MEAN = (0.52997664, 0.48070561, 0.41943838)
IMAGE_STD = (0.27608301, 0.26593025, 0.28238822)

_MEAN = torch.tensor(IMAGE_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
_STD = torch.tensor(IMAGE_STD, dtype=torch.float32).view(1, 3, 1, 1)


def build_transform(image_size: int) -> transforms.Compose:
    """The study's transform: ``Resize((S, S))``, ``ToTensor``, ``Normalize(mean, std)``."""
    return transforms.Compose(
        [
            transforms.Resize((image_size, image_size)),
            transforms.ToTensor(),
            transforms.Normalize(mean=IMAGE_MEAN, std=IMAGE_STD),
        ]
    )


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """Open an image file as RGB; DataError naming the file if it is missing or not an image."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found. Fix: add the image or correct img_dir / the CSV's image name.")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")  # convert() loads the pixels, so truncated files fail here
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(
            f"{path}: not a readable image ({exc}). Fix: replace the file with a valid "
            "JPEG/PNG image or remove its row from the annotations."
        ) from None


def load_image_uint8(path: str | os.PathLike, image_size: int) -> torch.Tensor:
    """Decode, convert to RGB and ``Resize((S, S))`` one image; a uint8 tensor (3, S, S)."""
    img = transforms.Resize((image_size, image_size))(open_rgb(path))
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def normalize_uint8(batch: torch.Tensor) -> torch.Tensor:
    """uint8 images (B, 3, S, S) or (3, S, S) -> float32, same as ``ToTensor`` + ``Normalize``."""
    single = batch.dim() == 3
    x = batch.unsqueeze(0) if single else batch
    x = x.to(torch.float32).div(255).sub(_MEAN).div(_STD)
    return x[0] if single else x


def decode_images(paths: Sequence[str | os.PathLike], image_size: int, num_threads: int | None = None) -> torch.Tensor:
    """Decode many images with a thread pool into one stacked uint8 tensor (N, 3, S, S)."""
    out = torch.empty((len(paths), 3, image_size, image_size), dtype=torch.uint8)
    if not paths:
        return out
    threads = num_threads or min(8, os.cpu_count() or 1)

    def fill(i: int) -> None:
        out[i] = load_image_uint8(paths[i], image_size)

    if threads <= 1 or len(paths) < 8:
        for i in range(len(paths)):
            fill(i)
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(fill, range(len(paths))))  # list() re-raises the first DataError
    return out


def _as_index(indices: Sequence[int] | torch.Tensor | np.ndarray | slice) -> torch.Tensor | slice:
    if isinstance(indices, slice):
        return indices
    return torch.as_tensor(np.asarray(indices), dtype=torch.long).reshape(-1)


class ImageStore:
    """Decoded, resized uint8 images of a list of files; ``batch(indices)`` normalises at once.

    With ``in_memory=True`` (default) every image is decoded once, up front; with
    ``in_memory=False`` images are decoded each time they are asked for.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        image_size: int,
        in_memory: bool = True,
        num_threads: int | None = None,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.image_size = int(image_size)
        self.in_memory = in_memory
        self.num_threads = num_threads
        self._uint8 = decode_images(self.paths, self.image_size, num_threads) if in_memory else None

    def __len__(self) -> int:
        return len(self.paths)

    def uint8(self, indices: Sequence[int] | torch.Tensor | np.ndarray | slice) -> torch.Tensor:
        """The uint8 images (B, 3, S, S) at ``indices``."""
        index = _as_index(indices)
        if self._uint8 is not None:
            return self._uint8[index]
        chosen = self.paths[index] if isinstance(index, slice) else [self.paths[i] for i in index.tolist()]
        return decode_images(chosen, self.image_size, self.num_threads)

    def batch(self, indices: Sequence[int] | torch.Tensor | np.ndarray | slice) -> torch.Tensor:
        """Normalised float32 images (B, 3, S, S) at ``indices``."""
        return normalize_uint8(self.uint8(indices))

    def all(self) -> torch.Tensor:
        """Every image, normalised: (N, 3, S, S)."""
        return self.batch(slice(None))
