"""Reference RDM files: .mat (MATLAB v5), .npy, .npz, .csv; square or upper-triangle vector."""

from __future__ import annotations

import io
import math
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import scipy.io

from hba_sweep.foundation.errors import DataError
from hba_sweep.foundation.io_utils import atomic_write_bytes
from hba_sweep.rsa import compute_model_rdm

SUFFIXES = (".mat", ".npy", ".npz", ".csv")
SYMMETRY_ATOL = 1e-6
_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by hba_sweep"


def _read_mat(path: Path) -> np.ndarray:
    try:
        contents = scipy.io.loadmat(str(path))
    except NotImplementedError:
        raise DataError(
            f"{path}: MATLAB v7.3 (HDF5) files are not supported. Fix: save it with "
            "save(..., '-v7') or convert it to .npy."
        ) from None
    except Exception as exc:  # scipy raises several types for corrupt files
        raise DataError(f"{path}: not a readable MATLAB file ({exc}). Fix: re-export the RDM.") from None
    names = [k for k in contents if not k.startswith("__")]
    if len(names) != 1:
        raise DataError(
            f"{path}: expected exactly one variable, found {names or 'none'}. Fix: save only the RDM in the file."
        )
    return np.asarray(contents[names[0]])


def _read_npz(path: Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as archive:
        names = list(archive.files)
        if len(names) != 1:
            raise DataError(
                f"{path}: expected exactly one array, found {names or 'none'}. "
                "Fix: save only the RDM (np.savez(path, rdm=rdm))."
            )
        return np.asarray(archive[names[0]])


def _read_csv(path: Path) -> np.ndarray:
    try:
        return np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise DataError(
            f"{path}: not a numeric CSV without header ({exc}). Fix: write the matrix as "
            "comma-separated numbers, one row per line, no header."
        ) from None


def _mat_shapes(path: Path) -> list[tuple[int, ...]]:
    """The dimensions of every variable of a MATLAB v5 file, from each variable's first bytes only (a
    compressed one is inflated by at most 512 bytes: scipy's whosmat inflates a whole read block)."""
    shapes = []
    with open(path, "rb") as fh:
        header = fh.read(128)
        if len(header) < 128 or header[126:128] not in (b"IM", b"MI"):
            return [tuple(shape) for _, shape, _ in scipy.io.whosmat(str(path))]  # v4: not compressed
        order = "<" if header[126:128] == b"IM" else ">"
        while len(tag := fh.read(8)) == 8:
            kind, size = struct.unpack(order + "II", tag)
            start = fh.tell()
            element = (
                zlib.decompressobj().decompress(fh.read(min(size, 4096)), 512)
                if kind == 15
                else tag + fh.read(min(size, 504))
            )
            dims_bytes = struct.unpack(order + "I", element[28:32])[0]
            shapes.append(struct.unpack(order + f"{dims_bytes // 4}i", element[32 : 32 + dims_bytes]))
            fh.seek(start + size + (-size % 8 if kind != 15 else 0))
    return shapes


def _header_shapes(path: Path, suffix: str) -> list[tuple[int, ...]]:
    """The stored arrays' shapes from the file's headers, without reading (or inflating) their data;
    none for a CSV."""
    if suffix == ".mat":
        return _mat_shapes(path)
    if suffix == ".npy":
        return [tuple(np.load(path, mmap_mode="r", allow_pickle=False).shape)]
    if suffix == ".npz":
        shapes = []
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                with archive.open(name) as fh:
                    version = np.lib.format.read_magic(fh)
                    read = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shapes.append(tuple(read(fh)[0]))
        return shapes
    return []


def _check_shape(path: Path, shape: tuple[int, ...], n: int | None, patterns: bool) -> None:
    """Before the data is read: a stored array that cannot be an RDM (or, with ``patterns``, response
    patterns) of ``n`` items is refused, so a small compressed file cannot allocate gigabytes."""
    if n is None:
        return
    length = math.prod(shape)
    vector = len(shape) == 1 or (len(shape) == 2 and 1 in shape)
    if (vector and length == n * (n - 1) // 2) or (len(shape) == 2 and shape[0] == n and (patterns or shape[1] == n)):
        return
    if len(shape) == 2 and not vector and shape[0] != shape[1]:
        raise DataError(
            f"{path}: the RDM has shape {shape}, not square. Fix: save an n x n matrix or its upper-triangle vector."
        )
    size = "x".join(str(d) for d in shape)
    raise DataError(
        f"{path}: the RDM is {size} (read from the file's header; its data was not loaded) but the "
        f"image set has {n} items. Fix: use the RDM made for these {n} items, in their order "
        f"({n}x{n} or its upper-triangle vector of {n * (n - 1) // 2})."
    )


def _read_array(path: Path, n: int | None = None, patterns: bool = False) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{path}: unsupported RDM file type {suffix!r}. Fix: use one of {list(SUFFIXES)}.")
    if not path.is_file():
        raise DataError(f"{path}: RDM file not found. Fix: correct the path.")
    try:
        for shape in _header_shapes(path, suffix):
            _check_shape(path, shape, n, patterns)
    except DataError:
        raise
    except Exception:  # noqa: BLE001 - an unreadable header: the full read below names the problem
        pass
    try:
        if suffix == ".mat":
            return _read_mat(path)
        if suffix == ".npz":
            return _read_npz(path)
        if suffix == ".csv":
            return _read_csv(path)
        return np.load(path, allow_pickle=False)
    except DataError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable {suffix} array ({exc}). Fix: re-export the RDM.") from None


def vector_to_square(vector: np.ndarray, path: str | os.PathLike = "<rdm>") -> np.ndarray:
    """Upper triangle (k=1, row-major) of length n(n-1)/2 -> symmetric (n, n), zero diagonal."""
    m = vector.size
    n = int(round((1 + math.sqrt(1 + 8 * m)) / 2))
    if n * (n - 1) // 2 != m or m == 0:
        raise DataError(
            f"{path}: a vector of length {m} is not the upper triangle of a square RDM "
            "(length must be n(n-1)/2). Fix: save the full square matrix or its k=1 upper triangle."
        )
    square = np.zeros((n, n), dtype=np.float64)
    rows, cols = np.triu_indices(n, k=1)
    square[rows, cols] = vector
    square[cols, rows] = vector
    return square


def _as_square(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype.kind not in "biuf":
        raise DataError(f"{path}: the RDM holds {array.dtype} values, not numbers. Fix: save a numeric array.")
    array = np.asarray(array, dtype=np.float64)
    if array.ndim == 2 and 1 in array.shape and array.shape != (1, 1):
        array = array.reshape(-1)
    if array.ndim == 1:
        if not np.all(np.isfinite(array)):
            raise DataError(
                f"{path}: the RDM vector has non-finite values at positions "
                f"{np.flatnonzero(~np.isfinite(array))[:5].tolist()}. Fix: replace NaN/inf."
            )
        return vector_to_square(array, path)
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise DataError(
            f"{path}: the RDM has shape {array.shape}, not square. Fix: save an n x n matrix "
            "or its upper-triangle vector."
        )
    return array


def validate_rdm(rdm: np.ndarray, path: str | os.PathLike = "<rdm>", n: int | None = None) -> np.ndarray:
    """Check a square RDM: finite, symmetric, of size ``n`` when given. Returns it."""
    bad = np.argwhere(~np.isfinite(rdm))
    if bad.size:
        i, j = (int(x) for x in bad[0])
        raise DataError(
            f"{path}: the RDM has {len(bad)} non-finite value(s), e.g. {rdm[i, j]} at row {i}, "
            f"column {j}. Fix: replace NaN/inf with dissimilarities."
        )
    asym = np.abs(rdm - rdm.T)
    if asym.max(initial=0.0) > SYMMETRY_ATOL * max(1.0, float(np.abs(rdm).max(initial=0.0))):
        i, j = (int(x) for x in np.unravel_index(np.argmax(asym), asym.shape))
        raise DataError(
            f"{path}: the RDM is not symmetric: [{i},{j}]={rdm[i, j]} but [{j},{i}]={rdm[j, i]}. "
            "Fix: symmetrise it ((R + R.T) / 2) or check the file."
        )
    if n is not None and rdm.shape[0] != n:
        raise DataError(
            f"{path}: the RDM is {rdm.shape[0]}x{rdm.shape[0]} but the image set has {n} "
            f"items. Fix: use the RDM made for these {n} items, in their order."
        )
    upper = rdm[np.triu_indices(rdm.shape[0], k=1)]
    if upper.size and np.all(upper == upper[0]):
        raise DataError(
            f"{path}: the RDM is constant (every dissimilarity above the diagonal is {upper[0]}), so "
            "its correlation with any model RDM is undefined. Fix: check the file (the right variable? "
            "dissimilarities, not a mask?) or re-export the RDM."
        )
    return rdm


def load_rdm(path: str | os.PathLike, n: int | None = None) -> np.ndarray:
    """Load a reference RDM (.mat/.npy/.npz/.csv, square or upper triangle) as float64 (n, n)."""
    path = Path(path)
    return validate_rdm(_as_square(_read_array(path, n), path), path, n)


def load_reference(path: str | os.PathLike, n: int, distance: str = "pearson") -> np.ndarray:
    """A reference RDM as :func:`load_rdm` reads it; a .npy/.npz/.csv file holding response
    patterns instead (n x d, d != n) becomes the RDM of its rows by ``distance``."""
    path = Path(path)
    array = _read_array(path, n, patterns=path.suffix.lower() != ".mat")
    try:
        return validate_rdm(_as_square(array, path), path, n)
    except DataError:
        if path.suffix.lower() == ".mat" or array.ndim != 2 or array.shape[0] != n or array.shape[0] == array.shape[1]:
            raise
        return compute_model_rdm(array, distance)


def mat_bytes(variables: dict[str, np.ndarray]) -> bytes:
    """A MATLAB v5 file's bytes, with a fixed header text (no timestamp: deterministic)."""
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, variables)
    data = bytearray(buffer.getvalue())
    data[:116] = _MAT_HEADER.ljust(116, b" ")
    return bytes(data)


def save_rdm_mat(path: str | os.PathLike, name: str, rdm: np.ndarray) -> None:
    """Write ``rdm`` as the single variable ``name`` of a MATLAB v5 file (atomically)."""
    atomic_write_bytes(path, mat_bytes({name: np.asarray(rdm, dtype=np.float64)}))
