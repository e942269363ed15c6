"""Evaluation sets of the analysis in their published formats: THINGS-fMRI, NOD, NIGHTS.

- THINGS-fMRI: metadata CSV (unnamed index, ``concept,session,run,subject_id,trial_id,stimulus``),
  images at ``img_dir/concept/stimulus``; embeddings are averaged per concept (concepts in order of
  first appearance), one reference RDM per ROI over concepts.
- NOD: ``image,category`` index, images at ``img_dir/category/image``; a fixed, seeded number of
  images per category; per-ROI reference RDMs over the selected images, in selection order.
- NIGHTS: ``data.csv`` with ``ref_path,left_path,right_path,left_vote,right_vote,split``, paths
  relative to ``img_dir``; the human choice is the side with more votes (ties are left out).

``read_evalsets_yaml`` reads the ``evalsets.yaml`` that ``demo-data`` writes (dataset -> paths).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hba_sweep.data.things import (
    check_files_exist,
    check_inside,
    check_no_empty,
    parse_numeric,
    read_csv_strings,
    require_columns,
)
from hba_sweep.foundation.errors import DataError
from hba_sweep.foundation.yaml_io import read_yaml

FMRI_COLUMNS = ("concept", "stimulus")
NOD_COLUMNS = ("image", "category")
NIGHTS_COLUMNS = ("ref_path", "left_path", "right_path", "left_vote", "right_vote", "split")


@dataclass(frozen=True)
class FmriSet:
    """THINGS-fMRI stimuli: one row per image, with the concept it belongs to."""

    image_paths: list[Path]
    concepts: list[str]  # concept of each image
    concept_names: list[str]  # unique concepts, order of first appearance (the RDM order)
    concept_index: np.ndarray  # int (n_images,): position of each image's concept in concept_names


@dataclass(frozen=True)
class NodSet:
    """The NOD images selected (seeded, per category), in the reference RDMs' order."""

    image_paths: list[Path]
    images: list[str]
    categories: list[str]


@dataclass(frozen=True)
class NightsSet:
    """NIGHTS 2AFC triplets; ``*_idx`` index ``image_paths`` (each image listed once)."""

    image_paths: list[Path]
    ref_idx: np.ndarray
    left_idx: np.ndarray
    right_idx: np.ndarray
    human_choice: np.ndarray  # 0: left judged closer to ref, 1: right
    splits: list[str]
    ties_skipped: int = 0
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # CSV row of each triplet

    def __len__(self) -> int:
        return len(self.human_choice)


def _check_dir(img_dir: Path, source: Path) -> None:
    if not img_dir.is_dir():
        raise DataError(f"{img_dir}: image directory not found (for {source}). Fix: correct img_dir.")


def load_things_fmri(metadata_csv: str | os.PathLike, img_dir: str | os.PathLike, check_files: bool = True) -> FmriSet:
    """Read THINGS-fMRI stimulus metadata; repeated (concept, stimulus) rows are listed once."""
    path, img_dir = Path(metadata_csv), Path(img_dir)
    frame = read_csv_strings(path, "THINGS-fMRI stimulus metadata")
    require_columns(
        frame, path, FMRI_COLUMNS, "an unnamed index column and concept,session,run,subject_id,trial_id,stimulus"
    )
    for column in FMRI_COLUMNS:
        check_no_empty(frame, path, column)
    check_inside(frame, path, FMRI_COLUMNS, "img_dir")
    frame = frame.drop_duplicates(subset=list(FMRI_COLUMNS))
    clash = frame["stimulus"][frame["stimulus"].duplicated()]
    if len(clash):
        raise DataError(
            f"{path}: stimulus {clash.iloc[0]!r} is listed under more than one concept. "
            "Fix: each stimulus belongs to one concept."
        )
    concepts = frame["concept"].tolist()
    names = list(dict.fromkeys(concepts))
    position = {c: i for i, c in enumerate(names)}
    paths = [img_dir / c / s for c, s in zip(concepts, frame["stimulus"], strict=False)]
    if check_files:
        _check_dir(img_dir, path)
        check_files_exist(paths, path, f"put the images at {img_dir}/<concept>/<stimulus> or correct img_dir.")
    return FmriSet(paths, concepts, names, np.array([position[c] for c in concepts], dtype=np.int64))


def _select_per_category(categories: list[str], max_per_category: int | None, seed: int) -> np.ndarray:
    """Row positions kept: all, or a seeded sample of ``max_per_category`` per category (file order)."""
    rows = np.arange(len(categories))
    if max_per_category is None:
        return rows
    rng = np.random.default_rng(seed)
    cats = np.asarray(categories)
    keep = []
    for cat in dict.fromkeys(categories):
        members = rows[cats == cat]
        if len(members) > max_per_category:
            members = np.sort(rng.choice(members, size=max_per_category, replace=False))
        keep.append(members)
    return np.sort(np.concatenate(keep))


def load_nod(
    index_csv: str | os.PathLike,
    img_dir: str | os.PathLike,
    max_images_per_category: int | None = None,
    seed: int = 0,
    check_files: bool = True,
) -> NodSet:
    """Read a NOD ``image,category`` index and select up to ``max_images_per_category`` per category."""
    path, img_dir = Path(index_csv), Path(img_dir)
    if max_images_per_category is not None and max_images_per_category < 1:
        raise DataError(
            f"{path}: max_images_per_category={max_images_per_category} must be at least 1. "
            "Fix: use a positive number, or none for all images."
        )
    frame = read_csv_strings(path, "NOD index")
    require_columns(frame, path, NOD_COLUMNS, "columns image,category (images at img_dir/category/image)")
    for column in NOD_COLUMNS:
        check_no_empty(frame, path, column)
    check_inside(frame, path, NOD_COLUMNS, "img_dir")
    dup = frame[frame.duplicated(subset=list(NOD_COLUMNS), keep=False)]
    if len(dup):
        raise DataError(
            f"{path}: image {dup['image'].iloc[0]!r} in category {dup['category'].iloc[0]!r} "
            "is listed twice. Fix: keep one row per image."
        )
    keep = _select_per_category(frame["category"].tolist(), max_images_per_category, seed)
    images = frame["image"].to_numpy()[keep].tolist()
    categories = frame["category"].to_numpy()[keep].tolist()
    paths = [img_dir / c / i for c, i in zip(categories, images, strict=False)]
    if check_files:
        _check_dir(img_dir, path)
        check_files_exist(paths, path, f"put the images at {img_dir}/<category>/<image> or correct img_dir.")
    return NodSet(paths, images, categories)


def _nights_votes(frame, path: Path) -> tuple[np.ndarray, np.ndarray]:
    votes = parse_numeric(frame, ["left_vote", "right_vote"], path, label="ref_path")
    negative = np.argwhere(votes < 0)
    if negative.size:
        row, col = (int(x) for x in negative[0])
        raise DataError(
            f"{path}: row {row + 1} (line {row + 2}), column "
            f"{['left_vote', 'right_vote'][col]!r}: {votes[row, col]} is negative. Fix: votes are counts or shares >= 0."
        )
    return votes[:, 0], votes[:, 1]


def load_nights(
    data_csv: str | os.PathLike, img_dir: str | os.PathLike, split: str | None = None, check_files: bool = True
) -> NightsSet:
    """Read NIGHTS triplets (optionally one split); each image is listed once in ``image_paths``."""
    path, img_dir = Path(data_csv), Path(img_dir)
    frame = read_csv_strings(path, "NIGHTS data.csv")
    require_columns(frame, path, NIGHTS_COLUMNS, ",".join(NIGHTS_COLUMNS))
    for column in ("ref_path", "left_path", "right_path", "split"):
        check_no_empty(frame, path, column)
    check_inside(frame, path, ("ref_path", "left_path", "right_path"), "img_dir")
    left_vote, right_vote = _nights_votes(frame, path)
    rows = np.arange(len(frame))
    if split is not None:
        available = sorted(set(frame["split"]))
        if split not in available:
            raise DataError(
                f"{path}: no triplets with split {split!r} (column 'split' has {available}). "
                "Fix: choose one of those splits."
            )
        rows = rows[frame["split"].to_numpy() == split]
    ties = rows[left_vote[rows] == right_vote[rows]]
    rows = rows[left_vote[rows] != right_vote[rows]]
    if rows.size == 0:
        raise DataError(
            f"{path}: every selected triplet is a tie (left_vote == right_vote). "
            "Fix: check the vote columns or the split."
        )
    columns = [frame[c].to_numpy()[rows] for c in ("ref_path", "left_path", "right_path")]
    unique = list(dict.fromkeys(np.concatenate(columns).tolist()))
    position = {p: i for i, p in enumerate(unique)}
    paths = [img_dir / p for p in unique]
    if check_files:
        _check_dir(img_dir, path)
        check_files_exist(paths, path, f"put the images under {img_dir} (paths in the CSV are relative to it).")
    ref, left, right = (np.array([position[p] for p in col], dtype=np.int64) for col in columns)
    choice = (right_vote[rows] > left_vote[rows]).astype(np.int64)
    return NightsSet(paths, ref, left, right, choice, frame["split"].to_numpy()[rows].tolist(), len(ties), rows)


EVALSET_KEYS = {
    "things": {"annotations_file", "img_dir", "reference_rdms"},
    "things_fmri": {"metadata_csv", "img_dir", "reference_rdms"},
    "nod": {"index_csv", "img_dir", "reference_rdms"},
    "nights": {"data_csv", "img_dir"},
}
_PATH_KEYS = ("annotations_file", "metadata_csv", "index_csv", "data_csv", "img_dir")


def read_evalsets_yaml(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Read ``evalsets.yaml`` (dataset -> settings); relative paths become relative to its folder."""
    path = Path(path)
    raw = read_yaml(
        path,
        DataError,
        "evaluation-set file",
        "correct the path (python -m hba_sweep demo-data DIR writes DIR/evalsets.yaml)",
    )
    return {name: _resolve_evalset(path, name, spec) for name, spec in raw.items()}


def _resolve_evalset(path: Path, name: str, spec: Any) -> dict[str, Any]:
    if name not in EVALSET_KEYS:
        raise DataError(f"{path}: unknown dataset {name!r}. Fix: use one of {sorted(EVALSET_KEYS)}.")
    if not isinstance(spec, dict):
        raise DataError(f"{path}: {name} must be a mapping of settings. Fix: see the demo evalsets.yaml.")
    missing = sorted(EVALSET_KEYS[name] - set(spec))
    if missing:
        raise DataError(f"{path}: {name} is missing {missing}. Fix: add them.")
    base = path.parent
    out = dict(spec)
    for key in _PATH_KEYS:
        if key in out:
            out[key] = str(base / str(out[key]))
    if "reference_rdms" in out:
        rdms = out["reference_rdms"]
        if not isinstance(rdms, dict) or not rdms:
            raise DataError(
                f"{path}: {name}.reference_rdms must map reference/ROI names to RDM files. "
                "Fix: e.g. {V1: rdm_V1.mat}."
            )
        out["reference_rdms"] = {str(k): str(base / str(v)) for k, v in rdms.items()}
    return out
