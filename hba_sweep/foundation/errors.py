"""User-facing errors: the CLI prints their message and exits non-zero, no traceback."""

from __future__ import annotations

import errno
import re


class HBAError(Exception):
    """A mistake the user can fix; the message names the file, the field and the fix."""

    exit_code = 2


class ConfigError(HBAError):
    """A training or sweep configuration is invalid."""


class DataError(HBAError):
    """A data file (CSV, image, RDM, index) is missing or malformed."""


class CheckpointError(HBAError):
    """A checkpoint is missing, truncated or corrupted."""


class SearchSpaceError(HBAError):
    """A search-space file is malformed."""


class CacheError(HBAError):
    """A cache entry cannot be used (written by another format version)."""


class StorageError(HBAError, OSError):
    """A result or cache location cannot be written or reached (permissions, full disk, network);
    an OSError too, so code that handles OS errors still sees it as one."""


# errno -> (what happened, what to do); the fix names the settings that move the output elsewhere
_OS_FAULTS = {
    errno.ENOSPC: (
        "no space left on the device",
        "free space there (or point save_path / --storage / --out / "
        "cache_dir elsewhere), then run the command again (--resume "
        "continues a run or study)",
    ),
    errno.EDQUOT: (
        "disk quota exceeded",
        "free space or raise the quota, then run the command again (--resume continues a run or study)",
    ),
    errno.EROFS: ("read-only file system", "point save_path / --storage / --out / cache_dir at a writable place"),
    errno.EACCES: (
        "permission denied",
        "make it writable for this user, or point save_path / --storage / --out / cache_dir at a writable place",
    ),
    errno.EPERM: (
        "operation not permitted",
        "make it writable for this user, or point save_path / --storage / --out / cache_dir at a writable place",
    ),
}


def storage_error(exc: BaseException, path: object = None) -> StorageError | None:
    """A StorageError naming ``path`` (else the file the OS named) and the fix for a disk fault (full,
    read-only, no permission); None for any other exception."""
    if not isinstance(exc, OSError) or exc.errno not in _OS_FAULTS:
        return None
    what, fix = _OS_FAULTS[exc.errno]
    where = path if path is not None else exc.filename
    return StorageError(f"{where}: {what}; nothing was changed there. Fix: {fix}.")


def refused_load(subject: str, exc: BaseException, fix: str, error: type[HBAError], read: str = "") -> HBAError:
    """The error for a file a weights_only reader refused: ``{subject} ({why}); {read}nothing in it was
    executed. Fix: {fix}`` (``why``: :func:`load_error_detail`)."""
    return error(f"{subject} ({load_error_detail(exc)}); {read}nothing in it was executed. Fix: {fix}")


def load_error_detail(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` (or a like reader) refused a file, in a few words: the
    code a pickle asks to run, else the first line of the message, else the exception's type."""
    text = str(exc).strip()
    found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) (\S+)", text)
    if found:
        return f"it asks to run {found.group(1)}"
    if text.startswith("Weights only load failed"):  # torch's advice to turn weights_only off is not ours to repeat
        detail = [
            line.strip()
            for line in text.splitlines()[1:]
            if line.strip()
            and "weights_only" not in line
            and not line.startswith(("Please file", "Check the documentation"))
        ]
        return f"{detail[0][:200] if detail else 'not plain tensors'}: refused by torch's weights_only reader"
    return text.splitlines()[0][:200] if text else type(exc).__name__
