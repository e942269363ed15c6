"""THINGS SPoSE annotations (the published CSV format) and the training dataset.

Format: an unnamed index column, ``image_name``, then 66 numeric columns named ``0``..``65``
(target column k <-> SPoSE prompt k). Images live at ``img_dir/image_name``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from hba_sweep.data.images import ImageStore, build_transform
from hba_sweep.foundation.errors import DataError

N_DIMS = 66
TARGET_COLUMNS = tuple(str(k) for k in range(N_DIMS))
FORMAT_HINT = "an unnamed index column, image_name, then 66 numeric columns named 0..65"


def read_csv_strings(path: str | os.PathLike, what: str) -> pd.DataFrame:
    """Read a CSV with every cell as a string (no NaN guessing); DataError if missing or empty."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found. Fix: correct the path.")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty. Fix: write a header and one row per image.") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{path}: not a readable CSV ({str(exc).strip()}). Fix: write a comma-separated file with one header line."
        ) from None
    if frame.empty:
        raise DataError(f"{path}: the file has a header but no rows. Fix: add one row per image.")
    return frame.fillna("")  # short rows: missing trailing cells read as empty


def require_columns(frame: pd.DataFrame, path: str | os.PathLike, needed: Sequence[str], expected: str) -> None:
    """DataError naming the missing columns, the columns found and the expected format."""
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing} (found {list(frame.columns)}). Fix: the file needs {expected}."
        )


def check_no_empty(frame: pd.DataFrame, path: str | os.PathLike, column: str) -> None:
    """DataError naming the first row whose ``column`` is empty."""
    empty = np.flatnonzero(frame[column].str.strip().to_numpy() == "")
    if empty.size:
        raise DataError(
            f"{path}: row {empty[0] + 1} (line {empty[0] + 2}): column {column!r} is empty. "
            "Fix: fill it in or remove the row."
        )


def _escapes(name: str) -> str:
    """Why an image path from a data file would leave its image folder ('' if it stays inside)."""
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or os.path.isabs(name):
        return "is an absolute path"
    if ".." in parts:
        return "contains '..'"
    return ""


def check_inside(frame: pd.DataFrame, path: str | os.PathLike, columns: Sequence[str], folder: str) -> None:
    """DataError if an image path in ``columns`` is absolute or contains '..' (it would read a file
    outside ``folder``); checked before any file is touched, so the message says nothing about it."""
    for column in columns:
        reasons = frame[column].map(_escapes).to_numpy()
        bad = np.flatnonzero(reasons != "")
        if bad.size:
            row = int(bad[0])
            raise DataError(
                f"{path}: row {row + 1} (line {row + 2}), column {column!r}: {frame[column].iloc[row]!r} "
                f"{reasons[row]} ({bad.size} such row(s)); image paths are read inside {folder} only. "
                f"Fix: give the path relative to {folder}, without '..'."
            )


def _target_columns(frame: pd.DataFrame, path: Path) -> list[str]:
    after = list(frame.columns[list(frame.columns).index("image_name") + 1 :])
    missing = [c for c in TARGET_COLUMNS if c not in after]
    extra = [c for c in after if c not in TARGET_COLUMNS]
    if missing or extra or len(after) != N_DIMS:
        detail = []
        if missing:
            detail.append(f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}")
        if extra:
            detail.append(f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}")
        raise DataError(
            f"{path}: found {len(after)} target columns after image_name, expected {N_DIMS} "
            f"({'; '.join(detail) or 'duplicated names'}). Fix: the file needs {FORMAT_HINT}."
        )
    return list(TARGET_COLUMNS)


def parse_numeric(
    frame: pd.DataFrame, columns: Sequence[str], path: str | os.PathLike, label: str = "image_name"
) -> np.ndarray:
    """The given columns as float64 (rows x columns); DataError naming the first bad cell."""
    values = np.column_stack([pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=np.float64) for c in columns])
    bad = np.argwhere(~np.isfinite(values))
    if bad.size:
        row, col = (int(x) for x in bad[0])
        raw = frame[columns[col]].iloc[row]
        name = frame[label].iloc[row] if label in frame.columns else ""
        problem = (
            "is empty"
            if not raw.strip()
            else "is infinite"
            if np.isinf(values[row, col])
            else "is NaN"
            if raw.strip().lower() in ("nan", "na", "null", "none", "n/a")
            else "is not a number"
        )
        raise DataError(
            f"{path}: row {row + 1} (line {row + 2}{f', {label} {name!r}' if name else ''}), "
            f"column {columns[col]!r}: value {raw!r} {problem}. Fix: give a finite number "
            f"({len(bad)} bad cell(s) in all)."
        )
    return values


def check_unique(frame: pd.DataFrame, path: str | os.PathLike, column: str) -> None:
    """DataError naming duplicated values of ``column`` and their rows."""
    dup = frame[column][frame[column].duplicated(keep=False)]
    if len(dup):
        first = dup.iloc[0]
        rows = [int(i) + 1 for i in np.flatnonzero(frame[column].to_numpy() == first)]
        raise DataError(
            f"{path}: column {column!r} has duplicates, e.g. {first!r} in rows {rows} "
            f"({dup.nunique()} duplicated value(s)). Fix: keep one row per {column}."
        )


def read_things_csv(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Read a THINGS SPoSE CSV -> (image names, float32 targets (N, 66)), strictly validated."""
    path = Path(path)
    frame = read_csv_strings(path, "annotations CSV")
    require_columns(frame, path, ["image_name"], FORMAT_HINT)
    columns = _target_columns(frame, path)
    check_no_empty(frame, path, "image_name")
    check_inside(frame, path, ["image_name"], "img_dir")
    check_unique(frame, path, "image_name")
    targets = parse_numeric(frame, columns, path).astype(np.float32)
    return frame["image_name"].tolist(), targets


def missing_files(paths: Sequence[Path]) -> list[Path]:
    """The paths that are not files."""
    return [p for p in paths if not p.is_file()]


def check_files_exist(paths: Sequence[Path], source: str | os.PathLike, fix: str) -> None:
    """DataError naming the first missing files (and how many) referenced from ``source``."""
    missing = missing_files(paths)
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        raise DataError(f"{source}: {len(missing)} of {len(paths)} image file(s) not found, e.g. {shown}. Fix: {fix}")


class ThingsDataset(Dataset):
    """THINGS images and 66-d SPoSE targets; yields ``(image_name, image, target)``.

    ``images(indices)`` returns normalised float32 batches from uint8 images decoded once
    (``in_memory=True``), the path the training loop uses.
    """

    def __init__(
        self,
        img_annotations_file: str | os.PathLike,
        img_dir: str | os.PathLike,
        image_size: int = 224,
        in_memory: bool = True,
        num_threads: int | None = None,
    ) -> None:
        self.annotations_file = Path(img_annotations_file)
        self.img_dir = Path(img_dir)
        self.image_size = int(image_size)
        self.names, targets = read_things_csv(self.annotations_file)
        self.targets = torch.from_numpy(targets)
        if not self.img_dir.is_dir():
            raise DataError(
                f"{self.img_dir}: image directory not found (for {self.annotations_file}). Fix: correct img_dir."
            )
        self.image_paths = [self.img_dir / name for name in self.names]
        check_files_exist(
            self.image_paths,
            self.annotations_file,
            f"put the images in {self.img_dir} or correct img_dir / image_name.",
        )
        self.transform = build_transform(self.image_size)
        self.store = ImageStore(self.image_paths, self.image_size, in_memory=in_memory, num_threads=num_threads)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor, torch.Tensor]:
        return self.names[index], self.store.batch([index])[0], self.targets[index]

    def images(self, indices: Sequence[int] | torch.Tensor | np.ndarray | slice) -> torch.Tensor:
        """Normalised float32 images (B, 3, S, S) at ``indices``."""
        return self.store.batch(indices)
