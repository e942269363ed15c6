"""Writes stay inside their root: a study, a ``save_path``, an ``--out`` folder.

Reads may follow symbolic links (users link data folders); writes may not. A symlinked folder on the
way from a root to a file written under it would send the write elsewhere (``<study>/analysis ->
/elsewhere`` would overwrite ``/elsewhere/report.md``), so it is refused with a message naming the
link. ``writes_inside(root)`` registers a root for the process; every atomic write
(:mod:`hba_sweep.foundation.io_utils`) and every ``make_dirs`` under a registered root is checked.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hba_sweep.foundation.errors import StorageError, storage_error

_ROOTS: list[str] = []


def _absolute(path: str | os.PathLike) -> str:
    return os.path.abspath(os.fspath(path))


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def link_on_the_way(path: str | os.PathLike, root: str | os.PathLike) -> str | None:
    """The first existing symbolic link strictly below ``root`` on the way to ``path`` (``path``
    itself included), or None. The root itself may be a link: the user chose it."""
    root_abs, here = _absolute(root), _absolute(path)
    if not _under(here, root_abs):
        return None
    current = root_abs
    for part in Path(os.path.relpath(here, root_abs)).parts:
        if part in (".", ""):
            continue
        current = os.path.join(current, part)
        if os.path.islink(current):
            return current
        if not os.path.lexists(current):
            return None
    return None


def ensure_inside(
    path: str | os.PathLike, root: str | os.PathLike, setting: str = "--out / save_path / --storage"
) -> Path:
    """``path`` when a write there stays under ``root`` (no symlinked folder on the way); else a
    StorageError naming the link, where it points and the fix."""
    link = link_on_the_way(path, root)
    if link is not None:
        target = os.path.realpath(link)
        raise StorageError(
            f"{link}: a symbolic link (to {target}) inside {_absolute(root)}; hba_sweep writes only inside it and "
            f"does not write through links, so nothing was written. Fix: replace the link with a real folder "
            f"(move it away, then mkdir {link}), or point {setting} at another place."
        )
    return Path(path)


def check_write(path: str | os.PathLike) -> None:
    """Refuse a write to ``path`` through a link below any registered root (see ``writes_inside``)."""
    here = _absolute(path)
    for root in _ROOTS:
        if _under(here, root):
            ensure_inside(here, root)


def make_dirs(path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """``mkdir -p path``, refused through a link below ``root`` or any registered root."""
    if root is not None:
        ensure_inside(path, root)
    check_write(path)
    Path(path).mkdir(parents=True, exist_ok=True)
    return Path(path)


@contextmanager
def writes_inside(root: str | os.PathLike) -> Iterator[Path]:
    """While inside, every atomic write and ``make_dirs`` under ``root`` is refused through a link."""
    entry = _absolute(root)
    ensure_inside(entry, entry)
    _ROOTS.append(entry)
    try:
        yield Path(root)
    finally:
        _ROOTS.remove(entry)


# Folders of a study that other tools write, not hba_sweep: W&B keeps its own `latest-run` link in wandb/.
FOREIGN = ("wandb",)


def links_below(root: str | os.PathLike, depth: int = 2) -> list[str]:
    """Symbolic links to folders within ``depth`` levels below ``root`` (a study's trial folders and
    their ``run/``, ``analysis/``, ``prefix_cache/``; not the folders in :data:`FOREIGN`): checked
    before a driver writes there."""
    found: list[str] = []
    top = _absolute(root)
    level = [top]
    for _ in range(depth):
        nxt: list[str] = []
        for folder in level:
            try:
                entries = [e for e in os.scandir(folder) if not (folder == top and e.name in FOREIGN)]
            except OSError:
                continue
            for entry in entries:
                if entry.is_symlink():
                    if os.path.isdir(entry.path):
                        found.append(entry.path)
                elif entry.is_dir():
                    nxt.append(entry.path)
        level = nxt
    return sorted(found)


def refuse_links_below(root: str | os.PathLike, setting: str = "--storage") -> None:
    """Refuse a study folder holding symlinked folders where runs write (checked before Ray starts)."""
    links = links_below(root)
    if links:
        ensure_inside(links[0], root, setting)


def check_output_root(path: str | os.PathLike, setting: str) -> None:
    """Before anything starts: ``path`` (or its nearest existing folder) must be a folder this user can
    create files in; a regular file on the way or an unwritable parent is a StorageError naming it."""
    here = Path(_absolute(path))
    existing = next(p for p in (here, *here.parents) if os.path.lexists(p))
    if not existing.is_dir():
        raise StorageError(
            f"{setting} {path}: {existing} is a regular file, not a folder; nothing was started. "
            f"Fix: point {setting} at a folder (or a new path), or move the file away."
        )
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".hba_write_probe_", dir=existing))
    except OSError as exc:
        fault = storage_error(exc, existing)
        raise (fault or StorageError(f"{existing}: cannot create files there ({exc})")) from None
