"""The demo data files (images, THINGS CSVs, RDMs, THINGS-fMRI/NOD/NIGHTS sets) of ``demo_data``.

Every image is rendered from a small latent vector (background colour, shape hue, size,
position, roundness, stripe frequency); its 66-d SPoSE-like target is a fixed, non-negative
random function of the same latent, so a model that learns to see these features lowers its
loss and its behavioural RSA rises. ``make_data_sets(root, ...)`` writes, under ``root``::

    train.csv, images/                      training set (THINGS CSV format)
    eval48/eval48.csv, eval48/images/       48 evaluation images (THINGS CSV format)
    eval48/RDM48_triplet.mat                48x48 reference RDM (variable RDM48_triplet)
    things_fmri/stimulus_metadata.csv, things_fmri/images/<concept>/<stimulus>, things_fmri/rdm_<ROI>.mat
    nod/index.csv, nod/images/<category>/<image>, nod/rdm_<ROI>.mat
    nights/data.csv, nights/ref/..., nights/distort/...
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from hba_sweep.data.evalsets import load_nod
from hba_sweep.data.rdm_io import save_rdm_mat
from hba_sweep.data.things import N_DIMS
from hba_sweep.foundation.io_utils import atomic_write_bytes, atomic_write_text

N_LATENT = 9
N_EVAL = 48
FMRI_CONCEPTS = (
    "acorn",
    "anchor",
    "balloon",
    "beetle",
    "candle",
    "cactus",
    "drum",
    "feather",
    "kettle",
    "lantern",
    "mitten",
    "pebble",
)
FMRI_IMAGES_PER_CONCEPT = 3
NOD_CATEGORIES = 10
NOD_IMAGES_PER_CATEGORY = 3
NOD_MAX_PER_CATEGORY = 2
NIGHTS_TRIPLETS = 30
ROIS = ("V1", "IT")


# ----------------------------------------------------------------------------- latent -> data

# How strongly each latent drives the targets: colours and size (what even a random
# backbone's features carry) dominate; position, stripes and roundness add a little.
LATENT_WEIGHT = np.array([4.0, 4.0, 4.0, 4.0, 3.0, 0.3, 0.3, 0.3, 0.3])


def target_mapping(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The fixed random map latent -> 66 targets: weights (66, N_LATENT) and biases (66,)."""
    rng = np.random.default_rng([seed, 0])
    weights = rng.normal(0.0, 1.0, size=(N_DIMS, N_LATENT)) * LATENT_WEIGHT
    return weights, rng.normal(-1.0, 0.8, size=N_DIMS)


def latent_to_targets(latent: np.ndarray, mapping: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Non-negative targets on a 0-100-ish scale: ``8 * softplus(W (z - 0.5) + b)``, 6 decimals."""
    weights, bias = mapping
    h = (latent - 0.5) @ weights.T + bias
    return np.round(8.0 * np.logaddexp(0.0, h), 6)


def render(latent: np.ndarray, size: int) -> np.ndarray:
    """A (size, size, 3) uint8 image: striped background + a coloured superellipse."""
    z = latent
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / (size - 1)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (1 + 5 * z[7]) * (xx + yy) / 2)
    background = (0.15 + 0.7 * z[0:3])[None, None, :] * (0.7 + 0.3 * stripes)[..., None]
    colour = 0.5 + 0.45 * np.cos(2 * np.pi * (z[3] + np.array([0.0, 1 / 3, 2 / 3])))
    radius = 0.15 + 0.2 * z[4]
    cx, cy = radius + (1 - 2 * radius) * z[5], radius + (1 - 2 * radius) * z[6]
    power = 2.0 ** (3 * z[8] - 1)
    inside = (np.abs(xx - cx) / radius) ** power + (np.abs(yy - cy) / radius) ** power <= 1.0
    image = np.where(inside[..., None], colour[None, None, :], background)
    return np.round(255 * np.clip(image, 0, 1)).astype(np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    """PNG bytes of a uint8 RGB array (deterministic: no timestamps)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def correlation_rdm(features: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """1 - Pearson correlation of rows, plus symmetric noise; zero diagonal, non-negative."""
    rdm = 1.0 - np.corrcoef(features) + rng.normal(0.0, noise, size=(len(features),) * 2)
    rdm = np.clip((rdm + rdm.T) / 2, 0.0, 2.0)  # exactly symmetric
    np.fill_diagonal(rdm, 0.0)
    return rdm


def pixel_features(pixels: np.ndarray, grid: int = 8) -> np.ndarray:
    """Block-averaged pixels (N, grid*grid*3) of uint8 images (N, S, S, 3): a low-level code."""
    n, size = pixels.shape[0], pixels.shape[1]
    block = size // grid
    cropped = pixels[:, : block * grid, : block * grid].astype(np.float64)
    return cropped.reshape(n, grid, block, grid, block, 3).mean(axis=(2, 4)).reshape(n, -1)


# ----------------------------------------------------------------------------- writers


def _write_images(root: Path, relpaths: list[str], latents: np.ndarray, size: int) -> np.ndarray:
    pixels = np.stack([render(z, size) for z in latents])
    for rel, image in zip(relpaths, pixels, strict=False):
        atomic_write_bytes(root / rel, png_bytes(image))
    return pixels


def _write_things_csv(path: Path, names: list[str], targets: np.ndarray) -> None:
    frame = pd.DataFrame(targets, columns=[str(k) for k in range(N_DIMS)])
    frame.insert(0, "image_name", names)
    atomic_write_text(path, frame.to_csv(float_format="%.6f"))


def _jittered(rng: np.random.Generator, groups: int, per_group: int, spread: float) -> np.ndarray:
    """Latents of ``groups`` x ``per_group`` images, each group around its own centre."""
    centres = rng.uniform(0.1, 0.9, size=(groups, N_LATENT))
    noise = rng.normal(0.0, spread, size=(groups, per_group, N_LATENT))
    return np.clip(centres[:, None, :] + noise, 0.0, 1.0).reshape(groups * per_group, N_LATENT)


def _roi_rdms(
    root: Path,
    folder: str,
    pixels: np.ndarray,
    targets: np.ndarray,
    groups: np.ndarray | None,
    rng: np.random.Generator,
) -> dict[str, str]:
    """V1: pixel code, IT: targets; averaged per group when ``groups`` is given. ROI -> relpath."""
    low, high = pixel_features(pixels), targets
    if groups is not None:
        low = np.stack([low[groups == g].mean(0) for g in np.unique(groups)])
        high = np.stack([high[groups == g].mean(0) for g in np.unique(groups)])
    out = {}
    for roi, features in zip(ROIS, (low, high), strict=False):
        rel = f"{folder}/rdm_{roi}.mat"
        save_rdm_mat(root / rel, f"rdm_{roi}", correlation_rdm(features, rng, 0.05))
        out[roi] = rel
    return out


def _make_training(root: Path, n_train: int, size: int, seed: int, mapping) -> dict[str, Any]:
    rng = np.random.default_rng([seed, 1])
    latents = rng.uniform(0.0, 1.0, size=(n_train, N_LATENT))
    names = [f"demo_{i:04d}.png" for i in range(n_train)]
    _write_images(root / "images", names, latents, size)
    _write_things_csv(root / "train.csv", names, latent_to_targets(latents, mapping))
    return {"img_dir": "images", "img_annotations_file": "train.csv"}


def _make_eval48(root: Path, size: int, seed: int, mapping) -> dict[str, Any]:
    rng = np.random.default_rng([seed, 2])
    latents = rng.uniform(0.0, 1.0, size=(N_EVAL, N_LATENT))
    names = [f"eval_{i:02d}.png" for i in range(N_EVAL)]
    targets = latent_to_targets(latents, mapping)
    _write_images(root / "eval48" / "images", names, latents, size)
    _write_things_csv(root / "eval48" / "eval48.csv", names, targets)
    save_rdm_mat(root / "eval48" / "RDM48_triplet.mat", "RDM48_triplet", correlation_rdm(targets, rng, 0.03))
    return {
        "annotations_file": "eval48/eval48.csv",
        "img_dir": "eval48/images",
        "reference_rdms": {"behavior": "eval48/RDM48_triplet.mat"},
    }


def _make_fmri(root: Path, size: int, seed: int, mapping) -> dict[str, Any]:
    rng = np.random.default_rng([seed, 3])
    per = FMRI_IMAGES_PER_CONCEPT
    latents = _jittered(rng, len(FMRI_CONCEPTS), per, 0.06)
    concepts = [c for c in FMRI_CONCEPTS for _ in range(per)]
    stimuli = [f"{c}_{j + 1:02d}s.png" for c in FMRI_CONCEPTS for j in range(per)]
    pixels = _write_images(
        root / "things_fmri" / "images", [f"{c}/{s}" for c, s in zip(concepts, stimuli, strict=False)], latents, size
    )
    n = len(stimuli)
    meta = pd.DataFrame(
        {
            "concept": concepts,
            "session": 1 + np.arange(n) % 4,
            "run": 1 + np.arange(n) % 10,
            "subject_id": 1,
            "trial_id": 1 + np.arange(n) * 7,
            "stimulus": stimuli,
        }
    )
    atomic_write_text(root / "things_fmri" / "stimulus_metadata.csv", meta.to_csv())
    groups = np.repeat(np.arange(len(FMRI_CONCEPTS)), per)
    rdms = _roi_rdms(root, "things_fmri", pixels, latent_to_targets(latents, mapping), groups, rng)
    return {
        "metadata_csv": "things_fmri/stimulus_metadata.csv",
        "img_dir": "things_fmri/images",
        "reference_rdms": rdms,
    }


def _make_nod(root: Path, size: int, seed: int, mapping) -> dict[str, Any]:
    rng = np.random.default_rng([seed, 4])
    per = NOD_IMAGES_PER_CATEGORY
    latents = _jittered(rng, NOD_CATEGORIES, per, 0.08)
    categories = [f"n{1440764 + 1111 * c:08d}" for c in range(NOD_CATEGORIES) for _ in range(per)]
    images = [f"{cat}_{1000 + 37 * i}.png" for i, cat in enumerate(categories)]
    pixels = _write_images(
        root / "nod" / "images", [f"{c}/{i}" for c, i in zip(categories, images, strict=False)], latents, size
    )
    atomic_write_text(
        root / "nod" / "index.csv", pd.DataFrame({"image": images, "category": categories}).to_csv(index=False)
    )
    selection = load_nod(
        root / "nod" / "index.csv", root / "nod" / "images", NOD_MAX_PER_CATEGORY, seed, check_files=False
    )
    keep = np.array([images.index(name) for name in selection.images])
    rdms = _roi_rdms(root, "nod", pixels[keep], latent_to_targets(latents[keep], mapping), None, rng)
    return {
        "index_csv": "nod/index.csv",
        "img_dir": "nod/images",
        "max_images_per_category": NOD_MAX_PER_CATEGORY,
        "seed": seed,
        "reference_rdms": rdms,
    }


def _make_nights(root: Path, size: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng([seed, 5])
    rows = []
    for i in range(NIGHTS_TRIPLETS):
        ref = rng.uniform(0.15, 0.85, size=N_LATENT)
        near, far = rng.uniform(0.05, 0.12), rng.uniform(0.3, 0.45)
        near_left = bool(rng.integers(0, 2))
        steps = (near, far) if near_left else (far, near)
        sides = []
        for step in steps:
            direction = rng.normal(size=N_LATENT)
            sides.append(np.clip(ref + step * direction / np.linalg.norm(direction), 0.0, 1.0))
        paths = [f"ref/000/{i:03d}.png", f"distort/000/{i:03d}_0.png", f"distort/000/{i:03d}_1.png"]
        _write_images(root / "nights", paths, np.stack([ref, *sides]), size)
        votes = (5, 1) if near_left else (1, 5)
        split = "test" if i < 20 else ("val" if i < 25 else "train")
        rows.append(
            {
                "id": i,
                "ref_path": paths[0],
                "left_path": paths[1],
                "right_path": paths[2],
                "left_vote": votes[0],
                "right_vote": votes[1],
                "split": split,
            }
        )
    atomic_write_text(root / "nights" / "data.csv", pd.DataFrame(rows).to_csv(index=False))
    return {"data_csv": "nights/data.csv", "img_dir": "nights", "split": "test"}


# ----------------------------------------------------------------------------- entry point


def make_data_sets(root: Path, n_train: int, size: int, seed: int) -> dict[str, dict[str, Any]]:
    """Write the training set and the four evaluation sets under ``root``; returns the
    evaluation sets' entries (things, things_fmri, nod, nights) with paths relative to ``root``."""
    mapping = target_mapping(seed)
    _make_training(root, n_train, size, seed, mapping)
    return {
        "things": _make_eval48(root, size, seed, mapping),
        "things_fmri": _make_fmri(root, size, seed, mapping),
        "nod": _make_nod(root, size, seed, mapping),
        "nights": _make_nights(root, size, seed),
    }
