"""The study manifest, ``<study>/study.json``: its one reader and its one writer.

The driver writes it (every planned trial with its role, baseline, state, skip note, Tune trial id and
fork source; each extension of the space; each driver run); ``status``, ``run --resume``, ``run``'s
best-trial line and ``analyze`` read it. A corrupt file is the same clear error for every reader.
"""

from __future__ import annotations

from typing import Any

from hba_sweep.foundation import storage
from hba_sweep.foundation.errors import ConfigError, HBAError

MANIFEST = "study.json"
# how each reader goes on without a readable manifest (the message's Fix)
RESUME_FIX = (
    "restore the file, or move it away and run again with --resume (finished trials are recognised from "
    "their own files and are not re-run)."
)
ANALYZE_FIX = "restore it, or move it away to analyse the checkpoints without it."


def manifest_path(root: str) -> str:
    return storage.join(root, MANIFEST)


def has_manifest(root: str) -> bool:
    return storage.exists(manifest_path(root))


def read_manifest(
    root: str, fs: storage.FileSystem | None = None, error: type[HBAError] = ConfigError, fix: str = RESUME_FIX
) -> dict[str, Any] | None:
    """The study's manifest, None if there is none; a corrupt one (not JSON, not an object, ``trials``
    not an object) is ``error`` naming the file, why, and ``fix``. ``fs``: ``root`` is inside it."""
    path = f"{root.rstrip('/')}/{MANIFEST}" if fs is not None else manifest_path(root)
    if not storage.is_file(path, fs):
        return None
    try:
        data = storage.read_json(path, fs)
        if not isinstance(data, dict) or not isinstance(data.get("trials", {}), dict):
            raise ValueError("not a JSON object with 'trials'")  # noqa: TRY004 - a corrupt file, caught below
        return data
    except (OSError, ValueError) as exc:
        raise error(f"{storage.redact(path)}: not a readable study manifest ({exc}). Fix: {fix}") from None


def read_manifest_quietly(root: str) -> dict[str, Any] | None:
    """The manifest, or None when there is none or it cannot be read (for optional extras)."""
    return storage.read_json_dict(manifest_path(root))


def refuse_existing(root: str) -> None:
    """ConfigError if a study already lives at ``root`` (a new run must not mix with it)."""
    if has_manifest(root):
        raise ConfigError(
            f"{storage.redact(root)}: this experiment exists already. Fix: add --resume to finish it "
            "(or grow it after editing the search space), or give --name NEW (or another --storage)."
        )


class Manifest:
    """The manifest in memory, written (atomically on a local path) after every change."""

    def __init__(self, root: str, data: dict[str, Any]):
        self.path, self.data = manifest_path(root), data

    def record(self, name: str, fields: dict[str, Any]) -> None:
        entry = self.data["trials"].setdefault(name, {"in_space": True})
        entry.update(fields)
        if fields.get("status") == "started":
            entry.pop("skip_reason", None)
        self.write()

    def write(self) -> None:
        storage.write_json(self.path, self.data)
