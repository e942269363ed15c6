"""Per-epoch checkpoints: adapter weights (safetensors) plus the full resume state.

A checkpoint is a directory ``checkpoints/epoch_<e>/`` holding

- ``adapter.safetensors``: the DoRA weights (no pickle);
- ``state.pt``: optimizer, scheduler, every RNG state, the shuffle generator, early-stopping
  counters and the split, as tensors and plain values, loaded with ``weights_only=True``;
- ``meta.json``: epoch, run name, the adapter kind, the config, the metrics rows so far and a
  SHA-256 of each file above, checked on load.

It is written into a temp directory and renamed into place, so a crash or a full disk leaves
the previous checkpoints intact and never a half-written one under an epoch's name.

``load_published_adapters`` reads the published study's ``epoch{e}_dora_params.pth`` files.
"""

from __future__ import annotations

import json
import pickle
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from hba_sweep.model import adapters as adapter_kinds
from hba_sweep.foundation.errors import CheckpointError, load_error_detail
from hba_sweep.foundation.io_utils import atomic_write_bytes, atomic_write_text, file_sha256, temp_dir

ADAPTER_FILE = "adapter.safetensors"
STATE_FILE = "state.pt"
META_FILE = "meta.json"
LEGACY_ADAPTER = adapter_kinds.PEFT_DORA  # the only kind before checkpoints recorded theirs


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


def epoch_dir(run_dir: str | Path, epoch: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"epoch_{epoch}"


def save_checkpoint(run_dir: str | Path, adapters: dict[str, torch.Tensor], state: TrainingState,
                    meta: dict[str, Any]) -> Path:
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


def run_config(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The run's config from a meta.json, with ``adapter`` set: recorded, else peft_dora (written
    before the adapter kind was recorded, when peft's DoRA was the only one)."""
    config = dict(meta.get("config", {}))
    config.setdefault("adapter", meta.get("adapter", LEGACY_ADAPTER))
    return config


def read_meta(ckpt_dir: str | Path) -> dict[str, Any]:
    """meta.json of a checkpoint; its ``config`` carries the adapter kind (see :func:`run_config`)."""
    path = Path(ckpt_dir) / META_FILE
    try:
        meta = json.loads(path.read_text())
        return {**meta, "config": run_config(meta)}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing. Fix: {ckpt_dir} is not a complete checkpoint; "
                              "resume from the previous epoch's checkpoint.") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{path}: unreadable (truncated or corrupted). Fix: delete {ckpt_dir} "
                              "and resume from the previous epoch's checkpoint.") from None


def verify_checkpoint(ckpt_dir: str | Path) -> dict[str, Any]:
    """Check every file against the hashes in meta.json; return the meta."""
    ckpt_dir = Path(ckpt_dir)
    meta = read_meta(ckpt_dir)
    for name, expected in meta.get("sha256", {}).items():
        path = ckpt_dir / name
        if not path.is_file() or file_sha256(path) != expected:
            what = "missing" if not path.is_file() else "does not match its recorded hash (truncated or corrupted)"
            raise CheckpointError(f"{path}: {what}. Fix: delete {ckpt_dir} and resume from the previous "
                                  "epoch's checkpoint (python -m hba_sweep train ... --resume).")
    return meta


def read_adapter_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Adapters from a safetensors file; CheckpointError if it is anything else (e.g. a pickle)."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc}); pickled weights are never "
                              "loaded. Fix: use the adapter.safetensors this tool wrote, or delete the checkpoint "
                              "and resume from the previous epoch's.") from None


def read_state_file(path: str | Path) -> TrainingState:
    """The resume state via ``torch.load(weights_only=True)``; CheckpointError for anything else."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        return TrainingState(**payload)
    except (pickle.UnpicklingError, RuntimeError, EOFError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: refused, not a training state this tool wrote ({load_error_detail(exc)}); "
                              "nothing in it was executed. Fix: delete this checkpoint and resume from the previous "
                              "epoch's; do not load it with weights_only=False.") from None


def load_adapters(ckpt_dir: str | Path, verify: bool = True) -> dict[str, torch.Tensor]:
    if verify:
        verify_checkpoint(ckpt_dir)
    return read_adapter_file(Path(ckpt_dir) / ADAPTER_FILE)


def load_checkpoint(ckpt_dir: str | Path) -> tuple[dict[str, torch.Tensor], TrainingState, dict[str, Any]]:
    """Verified load of (adapters, training state, meta). No pickle code runs."""
    meta = verify_checkpoint(ckpt_dir)
    adapters = read_adapter_file(Path(ckpt_dir) / ADAPTER_FILE)
    return adapters, read_state_file(Path(ckpt_dir) / STATE_FILE), meta


def list_epochs(run_dir: str | Path) -> list[int]:
    """Epochs with a complete checkpoint (meta.json present), ascending."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    epochs = []
    for d in root.glob("epoch_*"):
        try:
            epoch = int(d.name.removeprefix("epoch_"))
        except ValueError:
            continue
        if (d / META_FILE).is_file():
            epochs.append(epoch)
    return sorted(epochs)


def resolve_checkpoint(source: str | Path, epoch: int | None = None) -> Path:
    """A checkpoint directory from a run dir (latest or ``epoch``) or a checkpoint dir itself."""
    source = Path(source)
    if (source / META_FILE).is_file():
        if epoch is not None and read_meta(source).get("epoch") != epoch:
            raise CheckpointError(f"{source}: holds epoch {read_meta(source).get('epoch')}, not {epoch}. "
                                  "Fix: point at the run directory or the right epoch's checkpoint.")
        return source
    epochs = list_epochs(source)
    if not epochs:
        raise CheckpointError(f"{source}: no checkpoint found. Fix: give a run directory with "
                              "checkpoints/epoch_<e>/ or a checkpoint directory.")
    if epoch is None:
        return epoch_dir(source, epochs[-1])
    if epoch not in epochs:
        raise CheckpointError(f"{source}: has no checkpoint for epoch {epoch} (it has {epochs[0]}..{epochs[-1]}). "
                              "Fix: choose a finished epoch.")
    return epoch_dir(source, epoch)


def load_published_adapters(path: str | Path) -> dict[str, torch.Tensor]:
    """A published ``epoch{e}_dora_params.pth`` as the state dict ``CLIPHBA.load_adapter_state_dict``
    takes (``clip_model.`` keys renamed ``clip.``; an hba_dora model). Read with ``weights_only=True``."""
    path = Path(path)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing. Fix: give a published dora_params/epoch<e>_dora_params.pth.") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a published DoRA checkpoint ({load_error_detail(exc)}); nothing in it "
                              "was executed. Fix: give a published dora_params/epoch<e>_dora_params.pth.") from None
    problems = (["it holds a " + type(raw).__name__ + ", not a dict of tensors"] if not isinstance(raw, dict)
                else adapter_kinds.check_published_shapes(raw))
    if problems:
        raise CheckpointError(f"{path}: not a published DoRA checkpoint: {'; '.join(problems[:3])}. Fix: give a "
                              "published dora_params/epoch<e>_dora_params.pth (keys clip_model.{visual.,}transformer."
                              "resblocks.<i>.attn.out_proj.{m,delta_D_A,delta_D_B}).")
    return adapter_kinds.from_published_keys(raw)
