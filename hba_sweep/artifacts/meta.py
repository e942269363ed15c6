"""The store's one meta.json reader and one verifier (hashes), for local paths, URIs and pyarrow
filesystems alike. Torch-free: ``status`` and the analysis's listing read metas without loading torch."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

from hba_sweep.artifacts.layout import META_FILE
from hba_sweep.foundation import storage
from hba_sweep.foundation.errors import CheckpointError

# the only adapter kind before checkpoints recorded theirs (hba_sweep.model.adapters.PEFT_DORA; named here
# so that reading a meta.json loads no torch)
LEGACY_ADAPTER = "peft_dora"


def run_config(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The run's config from a meta.json, with ``adapter`` set: recorded, else peft_dora (written
    before the adapter kind was recorded, when peft's DoRA was the only one)."""
    config = dict(meta.get("config", {}))
    config.setdefault("adapter", meta.get("adapter", LEGACY_ADAPTER))
    return config


def read_meta(ckpt_dir: str | os.PathLike, fs: storage.FileSystem | None = None) -> dict[str, Any]:
    """meta.json of a checkpoint (ours, or ours inside a Tune ``checkpoint_<NNNNNN>/``; a local path, a
    URI, or a path inside ``fs``); its ``config`` carries the adapter kind (see :func:`run_config`)."""
    path = storage.join(str(ckpt_dir), META_FILE)
    try:
        meta = json.loads(storage.read_text(path, fs))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")  # noqa: TRY004 - caught below
        return {**meta, "config": run_config(meta)}
    except FileNotFoundError:
        raise CheckpointError(
            f"{path}: missing. Fix: {ckpt_dir} is not a complete checkpoint; "
            "resume from the previous epoch's checkpoint."
        ) from None
    except ValueError:  # not JSON, not UTF-8, not an object
        raise CheckpointError(
            f"{path}: unreadable (truncated or corrupted). Fix: delete {ckpt_dir} "
            "and resume from the previous epoch's checkpoint."
        ) from None


def check_sha256(
    path: str, expected: str, fix: str, fs: storage.FileSystem | None = None, data: bytes | None = None
) -> None:
    """The one verifier: CheckpointError unless the file at ``path`` (or its bytes ``data``, already read)
    has the SHA-256 recorded for it; ``fix`` ends the message."""
    if data is None and not storage.is_file(path, fs):
        raise CheckpointError(f"{path}: missing. Fix: {fix}")
    actual = hashlib.sha256(data).hexdigest() if data is not None else storage.sha256(path, fs)
    if actual != expected:
        raise CheckpointError(f"{path}: does not match its recorded hash (truncated or corrupted). Fix: {fix}")


def verify_checkpoint(ckpt_dir: str | os.PathLike, fs: storage.FileSystem | None = None) -> dict[str, Any]:
    """Check every file against the hashes in meta.json; return the meta."""
    meta = read_meta(ckpt_dir, fs)
    fix = f"delete {ckpt_dir} and resume from the previous epoch's checkpoint (python -m hba_sweep train ... --resume)."
    for name, expected in meta.get("sha256", {}).items():
        check_sha256(storage.join(str(ckpt_dir), name), expected, fix, fs)
    return meta
