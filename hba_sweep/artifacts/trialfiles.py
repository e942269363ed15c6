"""A trial's own files on the study's storage: its epoch checkpoints and its done marker.

A trial directory is ``<study>/<run name>/``. Tune writes ``checkpoint_<NNNNNN>/`` (ours inside:
adapter.safetensors, state.pt, meta.json) in report order and ``result.json`` (one line per report,
with its trial id); the trial ends with ``done.json``
(written by the trainable when training returns, or by the driver when Tune's scheduler stopped
it). These files, never Tune's saved experiment state, decide what is finished on ``--resume``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from hba_sweep.artifacts.layout import DONE_FILE, IDENTITY_FILE, RESULT_FILE, TUNE_CHECKPOINT
from hba_sweep.artifacts.meta import read_meta
from hba_sweep.foundation import storage
from hba_sweep.foundation.errors import CheckpointError


@dataclass
class StoredCheckpoint:
    index: int
    path: str
    epoch: int
    meta: dict[str, Any]


def trial_path(root: str, name: str) -> str:
    return storage.join(root, name)


def checkpoints(path: str) -> list[StoredCheckpoint]:
    """The trial's complete checkpoints in report order: contiguous from index 0, each with a
    readable meta.json (a checkpoint cut short by a kill ends the list; its index is reused)."""
    indices = sorted(int(m.group(1)) for n in storage.listdir(path) if (m := TUNE_CHECKPOINT.match(n)))
    out = []
    for expected, index in enumerate(indices):
        if index != expected:
            break
        ckpt = storage.join(path, f"checkpoint_{index:06d}")
        try:
            meta = read_meta(ckpt)
            out.append(StoredCheckpoint(index, ckpt, int(meta["epoch"]), meta))
        except (CheckpointError, OSError, ValueError, KeyError, TypeError):
            break
    return out


def newest_meta(path: str) -> dict[str, Any] | None:
    """meta.json of the trial's newest readable checkpoint (one read, not a listing of every epoch)."""
    indices = sorted((int(m.group(1)) for n in storage.listdir(path) if (m := TUNE_CHECKPOINT.match(n))), reverse=True)
    for index in indices:
        try:
            return read_meta(storage.join(path, f"checkpoint_{index:06d}"))
        except (CheckpointError, OSError, ValueError):
            continue
    return None


def write_identity(path: str, identity: Any, **extra: Any) -> None:
    """Record the trial's :class:`~hba_sweep.artifacts.identity.Identity` in its identity.json."""
    storage.write_json(storage.join(path, IDENTITY_FILE), {**identity.to_dict(), **extra})


def read_identity(path: str) -> Any:
    """What the trial recorded it is (an :class:`~hba_sweep.artifacts.identity.Identity`): its identity.json,
    else (trials recorded before it existed) the config and inputs of its newest checkpoint; None for a
    trial that never started."""
    from hba_sweep.artifacts.identity import Identity, settings_of  # reason: `status --help` stays torch-free

    data = storage.read_json_dict(storage.join(path, IDENTITY_FILE))
    if data is not None and isinstance(data.get("settings"), dict):
        return Identity.from_dict(data)
    meta = newest_meta(path)
    if meta is None or not isinstance(meta.get("config"), dict):
        return None
    return Identity(settings_of(meta["config"]), dict(meta.get("inputs") or {}), str(meta.get("version", "")))


def read_done(path: str) -> dict[str, Any] | None:
    """The done marker of a trial, or None (not finished, or the marker is unreadable)."""
    done = storage.read_json_dict(storage.join(path, DONE_FILE))
    return done if done is not None and "last_epoch" in done else None


def write_done(path: str, last_epoch: int | None, epochs: int | None, reason: str, **extra: Any) -> dict[str, Any]:
    """Mark a trial finished (atomic on a local path): its last epoch, why it ended, and ``extra``
    (the trainable adds the run status training returned: finished / early_stopped / window_incomplete)."""
    done = {
        "last_epoch": last_epoch,
        "epochs": epochs,
        "reason": reason,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }
    storage.write_json(storage.join(path, DONE_FILE), done)
    return done


def end_reason(last_epoch: int | None, epochs: int | None) -> str:
    """'completed' when the last epoch ran, else 'early stopping' (training returned before it)."""
    if last_epoch is None or epochs is None or last_epoch >= epochs - 1:
        return "completed"
    return f"early stopping after epoch {last_epoch}"


def tune_trial_id(trial_dir: str, fs: storage.FileSystem | None = None) -> str | None:
    """Tune's id of the trial in ``trial_dir`` (from the first line of its result.json), if it has one."""
    path = f"{trial_dir.rstrip('/')}/{RESULT_FILE}" if fs is not None else storage.join(trial_dir, RESULT_FILE)
    if not storage.is_file(path, fs):
        return None
    try:
        first = storage.read_bytes(path, fs, limit=1 << 16).split(b"\n", 1)[0]
        value = json.loads(first.decode("utf-8")).get("trial_id")
    except (ValueError, OSError, AttributeError):
        return None
    return str(value) if value else None
