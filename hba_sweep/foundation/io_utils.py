"""Atomic file writes: a temp file in the same directory, fsync, then rename.

Files and folders get the modes any other tool would give them under the user's umask (0644 and
0755 with umask 022): ``tempfile`` makes them private (0600 / 0700), which colleagues on shared
storage could not read.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hba_sweep.foundation.errors import storage_error
from hba_sweep.foundation.safe_paths import check_write


def current_umask() -> int:
    """The process umask (from /proc on Linux, else by setting and restoring it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_dir(prefix: str, dir: str | os.PathLike) -> Path:
    """``tempfile.mkdtemp`` with the umask's mode (0755 under 022), to be renamed into place."""
    check_write(Path(dir) / prefix)  # never through a symlinked folder below a registered root
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=dir))
    os.chmod(path, 0o777 & ~current_umask())
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> None:
    """Call ``write(fh)`` on a temp file next to ``path`` and rename it into place.

    On any error (a full disk included) the temp file is removed and ``path`` keeps its
    previous content.
    """
    path = Path(path)
    check_write(path)  # never through a symlinked folder below a registered root (safe_paths)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # read-only, no permission, full: a clear message naming the path
        err = storage_error(exc, path)
        if err is None:
            raise
        raise err from None
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp's 0600 -> what open() would give
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        fault = storage_error(exc, path)
        if fault is not None:
            raise fault from None
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    import torch  # reason: the CLI parsers import io_utils (through storage): --help stays torch-free

    atomic_write(path, lambda fh: torch.save(obj, fh))


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
