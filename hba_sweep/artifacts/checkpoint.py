"""Per-epoch checkpoints: adapter weights (safetensors) plus the full resume state.

A checkpoint is a directory ``checkpoints/epoch_<e>/`` holding

- ``adapter.safetensors``: the DoRA weights (no pickle);
- ``state.pt``: optimizer, scheduler, every RNG state, the shuffle generator, early-stopping
  counters and the split, as tensors and plain values, loaded with ``weights_only=True``;
- ``meta.json``: epoch, run name, the adapter kind, the config, the metrics rows so far and a
  SHA-256 of each file above, checked on load.

It is written into a temp directory and renamed into place, so a crash or a full disk leaves
the previous checkpoints intact and never a half-written one under an epoch's name.

Reading is the store's one reader, for local paths, URIs and pyarrow filesystems alike:
:func:`read_meta`, :func:`check_sha256` / :func:`verify_checkpoint` (the verifier) and
:func:`load_adapters` (ours or a published ``epoch{e}_dora_params.pth``).
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from hba_sweep.artifacts.layout import (
    ADAPTER_FILE,
    META_FILE,
    STATE_FILE,
    epoch_dir,
    list_epochs,
    published_epoch,
)
from hba_sweep.artifacts.meta import (
    check_sha256,
    read_meta,
    run_config,
    verify_checkpoint,
)
from hba_sweep.artifacts.published import load_published_adapters
from hba_sweep.foundation import storage
from hba_sweep.foundation.errors import CheckpointError, refused_load
from hba_sweep.foundation.io_utils import (
    atomic_write_bytes,
    atomic_write_text,
    file_sha256,
    temp_dir,
)


@dataclass
class TrainingState:
    """Everything besides the model needed to continue a run exactly."""

    epoch: int | None  # the last finished epoch (-1: only the initial evaluation; None: not even that yet)
    optimizer: dict
    scheduler: dict | None
    shuffle_generator: torch.Tensor
    best_val_loss: float = float("inf")
    epochs_without_improvement: int = 0
    train_indices: list[int] = field(default_factory=list)
    val_indices: list[int] = field(default_factory=list)
    rng: dict = field(default_factory=dict)
    # the split by image name and each image's target digest (checked on resume/fork; see training/split.py)
    train_names: list[str] = field(default_factory=list)
    val_names: list[str] = field(default_factory=list)
    target_digests: dict = field(default_factory=dict)
    image_digests: dict = field(default_factory=dict)  # the split's images by name: SHA-256 of each file


def capture_rng() -> dict:
    """Torch (CPU and CUDA), numpy and python RNG states as weights_only-loadable values."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_has_gauss": int(np_state[3]),
        "numpy_gauss": float(np_state[4]),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], state["numpy_has_gauss"], state["numpy_gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: str | Path, adapters: dict[str, torch.Tensor], state: TrainingState, meta: dict[str, Any]
) -> Path:
    """Write epoch ``state.epoch``'s checkpoint atomically; return its directory."""
    target = epoch_dir(run_dir, state.epoch)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(f".{target.name}.", target.parent)
    try:
        atomic_write_bytes(tmp / ADAPTER_FILE, save(adapters))  # safetensors.save_file makes 0600 files
        payload = {k: getattr(state, k) for k in state.__dataclass_fields__}
        torch.save(payload, tmp / STATE_FILE)
        hashes = {name: file_sha256(tmp / name) for name in (ADAPTER_FILE, STATE_FILE)}
        atomic_write_text(tmp / META_FILE, json.dumps({**meta, "epoch": state.epoch, "sha256": hashes}, indent=1))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


READ_FIX = "use the adapter.safetensors this tool wrote, or delete the checkpoint and resume from the previous epoch's."


def load_adapters(
    ckpt: str | os.PathLike,
    verify: bool = True,
    fs: storage.FileSystem | None = None,
    expected: str | None = None,
    fix: str = READ_FIX,
) -> dict[str, torch.Tensor]:
    """The one adapter loader. ``ckpt``: our checkpoint directory (its ``adapter.safetensors``; no pickle)
    or a published ``epoch{e}_dora_params.pth`` (``weights_only``, as ``CLIPHBA.load_adapter_state_dict``
    takes it). Checked against ``expected`` (a SHA-256 recorded earlier) when given, else, with ``verify``,
    every file of our checkpoint against its meta.json. ``fix`` ends the messages of a bad file."""
    ckpt = str(ckpt)
    if published_epoch(ckpt) is not None:
        if expected:
            check_sha256(ckpt, expected, fix, fs)
        return load_published_adapters(ckpt)
    if verify and not expected:
        verify_checkpoint(ckpt, fs)
    path = storage.join(ckpt, ADAPTER_FILE)
    try:
        data = storage.read_bytes(path, fs)
        if expected:
            check_sha256(path, expected, fix, data=data)
        return load(data)
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({exc}); pickled weights are never loaded. Fix: {fix}"
        ) from None


def read_state_file(path: str | Path) -> TrainingState:
    """The resume state via ``torch.load(weights_only=True)``; CheckpointError for anything else."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        return TrainingState(**payload)
    except (pickle.UnpicklingError, RuntimeError, EOFError, TypeError, ValueError) as exc:
        fix = "delete this checkpoint and resume from the previous epoch's; do not load it with weights_only=False."
        raise refused_load(
            f"{path}: refused, not a training state this tool wrote", exc, fix, CheckpointError
        ) from None


def load_checkpoint(ckpt_dir: str | Path) -> tuple[dict[str, torch.Tensor], TrainingState, dict[str, Any]]:
    """Verified load of (adapters, training state, meta). No pickle code runs."""
    meta = verify_checkpoint(ckpt_dir)
    adapters = load_adapters(ckpt_dir, verify=False)
    return adapters, read_state_file(Path(ckpt_dir) / STATE_FILE), meta


def resolve_checkpoint(source: str | Path, epoch: int | None = None) -> Path:
    """A checkpoint directory from a run dir (latest or ``epoch``) or a checkpoint dir itself."""
    source = Path(source)
    if (source / META_FILE).is_file():
        if epoch is not None and read_meta(source).get("epoch") != epoch:
            raise CheckpointError(
                f"{source}: holds epoch {read_meta(source).get('epoch')}, not {epoch}. "
                "Fix: point at the run directory or the right epoch's checkpoint."
            )
        return source
    epochs = list_epochs(source)
    if not epochs:
        raise CheckpointError(
            f"{source}: no checkpoint found. Fix: give a run directory with "
            "checkpoints/epoch_<e>/ or a checkpoint directory."
        )
    if epoch is None:
        return epoch_dir(source, epochs[-1])
    if epoch not in epochs:
        raise CheckpointError(
            f"{source}: has no checkpoint for epoch {epoch} (it has {epochs[0]}..{epochs[-1]}). "
            "Fix: choose a finished epoch."
        )
    return epoch_dir(source, epoch)


# our layout's reading API in one import (``from hba_sweep.artifacts import checkpoint as ckpt``)
__all__ = [
    "ADAPTER_FILE",
    "META_FILE",
    "STATE_FILE",
    "TrainingState",
    "capture_rng",
    "check_sha256",
    "epoch_dir",
    "list_epochs",
    "load_adapters",
    "load_checkpoint",
    "load_published_adapters",
    "read_meta",
    "read_state_file",
    "resolve_checkpoint",
    "restore_rng",
    "run_config",
    "save_checkpoint",
    "verify_checkpoint",
]
