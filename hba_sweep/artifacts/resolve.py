"""What ``infer``'s ``model_weights_path`` and ``epoch`` name: our run or checkpoint directories, or the
published run folders and ``epoch{e}_dora_params.pth`` files; their metas and verified adapters."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from hba_sweep.artifacts import checkpoint as ckpt
from hba_sweep.artifacts.layout import DORA_PARAMS, is_published_run, published_epoch
from hba_sweep.artifacts.published import PublishedRun
from hba_sweep.foundation.errors import CheckpointError
from hba_sweep.model.adapters import HBA_DORA


def published_checkpoints(path: Path, epoch: Any) -> list[Path] | None:
    """The published ``epoch{e}_dora_params.pth`` files ``model_weights_path``/``epoch`` name (a file:
    itself, whatever ``epoch`` says; a published run folder: its epoch(s)), or None if it is not one."""
    if path.is_file():
        return [path] if published_epoch(path) is not None else None
    if not path.is_dir() or not is_published_run(path):
        return None
    run = PublishedRun.open(path)
    if epoch == "all":
        return [run.dora_path(e) for e in run.epochs()]
    epochs = epoch if isinstance(epoch, (list, tuple)) else [run.epochs()[-1] if epoch is None else epoch]
    missing = [int(e) for e in epochs if not run.dora_path(int(e)).is_file()]
    if missing:
        raise CheckpointError(
            f"{path}: no dora_params/epoch<e>_dora_params.pth for epoch(s) {missing} (it has "
            f"{run.span()}). Fix: choose epochs the run finished."
        )
    return [run.dora_path(int(e)) for e in epochs]


def checkpoint_dirs(weights: str | os.PathLike, epoch: Any) -> list[Path]:
    """Checkpoints named by ``model_weights_path`` and ``epoch`` (int, list, 'all' or none: latest): our
    checkpoint directories, or published ``epoch{e}_dora_params.pth`` files."""
    path = Path(weights)
    published = published_checkpoints(path, epoch)
    if published is not None:
        return published
    if path.is_file():
        if path.suffix in (".pt", ".pth", ".bin", ".pkl"):
            raise CheckpointError(
                f"{path}: pickled weights are not loaded (they can run code). Fix: point at a "
                "run directory, a checkpoint's adapter.safetensors or a published "
                "epoch<e>_dora_params.pth (read with weights_only)."
            )
        path = path.parent
    if not path.exists():
        raise CheckpointError(f"{path}: model_weights_path does not exist. Fix: correct the path.")
    if (path / ckpt.META_FILE).is_file():
        return [ckpt.resolve_checkpoint(path, None if epoch in (None, "all") else int(epoch))]
    if epoch == "all":
        epochs = ckpt.list_epochs(path)
        if not epochs:
            raise CheckpointError(
                f"{path}: no checkpoint found. Fix: give a run directory with checkpoints/epoch_<e>/."
            )
        return [ckpt.epoch_dir(path, e) for e in epochs]
    if isinstance(epoch, (list, tuple)):
        return [ckpt.resolve_checkpoint(path, int(e)) for e in epoch]
    return [ckpt.resolve_checkpoint(path, None if epoch is None else int(epoch))]


def load_checkpoint_any(ckpt_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Verified adapters and meta of what :func:`checkpoint_dirs` returned (no pickle: safetensors and
    JSON, or a published .pth read weights_only); a folder without meta.json loads unverified."""
    meta = read_meta(ckpt_dir)
    return ckpt.load_adapters(ckpt_dir, verify=bool(meta)), meta


def read_meta(ckpt_dir: Path) -> dict[str, Any]:
    """Our checkpoint's meta.json ({} without one); for a published file its epoch and run name (the
    model settings then come from the inference YAML, as in the published script)."""
    if ckpt_dir.is_file():
        run = ckpt_dir.parent.parent if ckpt_dir.parent.name == DORA_PARAMS else ckpt_dir.parent
        return {"epoch": published_epoch(ckpt_dir), "run_name": run.name, "published": True, "adapter": HBA_DORA}
    return ckpt.read_meta(ckpt_dir) if (ckpt_dir / ckpt.META_FILE).is_file() else {}
