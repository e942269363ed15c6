"""Readers of what the published CLIP-HBA code wrote: its configs, run folders and checkpoints.

Everything the published trainer (``src/training/trainer.py`` and the older
``cvpr_train_behavior_things_pipeline.py``) leaves on disk has one reader here:

- ``training_config.yaml`` / ``inference_config.yaml``: their keys' rules are
  :mod:`hba_sweep.config.published_keys` (config layer); the ``cuda`` key's published meaning is
  :func:`hba_sweep.foundation.devices.published_device`.
- ``training_res.csv`` (:func:`read_training_res`): ``epoch,train_loss,test_loss|val_loss[,rho,p]``.
  Epoch numbering: the older pipeline wrote ``epoch + 1`` in the CSV (1-based; its header ends in
  ``behavioral_rsa_p_value``) but saved ``dora_params/epoch{epoch}_dora_params.pth`` 0-based; the
  current trainer writes the 0-based epoch in both. Rows are returned with our 0-based epoch (the
  epoch of the checkpoint after it), so CSV row ``k`` of a 1-based file is epoch ``k - 1``.
- ``dora_params/epoch{e}_dora_params.pth`` (:func:`read_dora_params`): a dict of tensors, read
  with ``torch.load(weights_only=True)`` only; :func:`load_published_adapters` checks its shapes and
  renames its keys for the model.
- ``random_states/dataset_split_indices.pth`` (:func:`read_split_indices`): ``train_indices``,
  ``test_indices`` (row numbers of the annotation CSV, in ``random_split`` order), read safely.
- A run folder (:class:`PublishedRun`): ``training_res.csv`` + ``dora_params/`` (+ ``random_states/``);
  whether a folder is one: :func:`hba_sweep.artifacts.layout.is_published_run`.
"""

from __future__ import annotations

import csv
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hba_sweep.artifacts.layout import (
    DORA_PARAMS,
    RANDOM_STATES,
    SPLIT_INDICES,
    TRAINING_RES,
    published_epoch,
)
from hba_sweep.foundation.errors import CheckpointError, DataError, refused_load
from hba_sweep.model import adapters as adapter_kinds

# training_res.csv column spellings of the published trainers -> our metrics columns.
COLUMN_NAMES = {
    "epoch": "epoch",
    "train_loss": "train_loss",
    "val_loss": "val_loss",
    "test_loss": "val_loss",
    "behavioral_rsa_rho": "behavioral_rsa_rho",
    "rsa_behavioral_corr": "behavioral_rsa_rho",
    "behavioral_rsa_p": "behavioral_rsa_p",
    "behavioral_rsa_p_value": "behavioral_rsa_p",
    "rsa_behavioral_p": "behavioral_rsa_p",
}
ONE_BASED_MARKER = "behavioral_rsa_p_value"  # header of the older pipeline, which wrote epoch + 1


# ---- training_res.csv --------------------------------------------------------------------
def read_training_res(path: str | os.PathLike, one_based: bool | None = None) -> list[dict[str, Any]]:
    """Rows of a published ``training_res.csv`` as our metrics rows (0-based ``epoch``, ``val_loss``...).

    ``one_based`` None: decided by the header (``behavioral_rsa_p_value`` = the older, 1-based writer).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: training_res.csv not found. Fix: point at a published run folder.")
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header:
            raise DataError(f"{path}: empty. Fix: a published training_res.csv starts with a header line.")
        header = [h.strip() for h in header]
        unknown = [h for h in header if h and h not in COLUMN_NAMES]
        if "epoch" not in header or not ({"val_loss", "test_loss"} & set(header)) or unknown:
            raise DataError(
                f"{path}: header {header} is not a published training_res.csv "
                "(epoch,train_loss,test_loss|val_loss[,behavioral_rsa_rho,behavioral_rsa_p[_value]]). "
                "Fix: point at the training_res.csv the published trainer wrote."
            )
        shift = 1 if (ONE_BASED_MARKER in header if one_based is None else one_based) else 0
        rows: list[dict[str, Any]] = []
        lines: dict[int, int] = {}  # epoch -> the line that gave it
        for line_no, cells in enumerate(reader, start=2):
            if not any(c.strip() for c in cells):
                continue
            if len(cells) < len(header) - 2 or len(cells) > len(header):
                raise DataError(
                    f"{path}: line {line_no} has {len(cells)} cells for {len(header)} columns. "
                    "Fix: repair or truncate the file at that line."
                )
            epoch = _epoch_cell(
                path, line_no, cells[header.index("epoch")] if header.index("epoch") < len(cells) else "", shift, lines
            )
            row: dict[str, Any] = {}
            for name, cell in zip(header, cells, strict=False):
                try:
                    row[COLUMN_NAMES[name]] = float(cell) if cell.strip() else math.nan
                except ValueError:
                    raise DataError(
                        f"{path}: line {line_no}: {name}={cell!r} is not a number. Fix: repair the file."
                    ) from None
            row["epoch"] = epoch
            row.setdefault("behavioral_rsa_rho", math.nan)
            row.setdefault("behavioral_rsa_p", math.nan)
            rows.append(row)
    return rows


def _epoch_cell(path: Path, line_no: int, cell: str, shift: int, seen: dict[int, int]) -> int:
    """The 0-based epoch of one ``training_res.csv`` row: a whole number, not negative, not repeated
    (a DataError naming the file and line otherwise; ``seen`` maps epochs to their lines)."""
    text = cell.strip()
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not text or not math.isfinite(number) or not number.is_integer() or number - shift < 0:
        raise DataError(
            f"{path}: line {line_no}: epoch={cell!r} is not a whole number of at least {shift} "
            "(the published trainer writes one row per epoch: 0, 1, 2, ...). Fix: repair or remove "
            "that line."
        )
    epoch = int(number) - shift
    if epoch in seen:
        raise DataError(
            f"{path}: line {line_no}: epoch {cell.strip()} again (first on line {seen[epoch]}); which "
            "row is the epoch's is unknown. Fix: keep one row per epoch (the published trainer "
            "writes each once)."
        )
    seen[epoch] = line_no
    return epoch


# ---- checkpoints and split -----------------------------------------------------------------
def _safe_load(path: Path, what: str, fix: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: {what} not found. Fix: {fix}") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        read = "it is read with weights_only=True and "
        raise refused_load(f"{path}: refused as {what}", exc, fix, CheckpointError, read) from None


def read_dora_params(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A published ``epoch{e}_dora_params.pth``: a dict of tensors (weights_only; nothing executes)."""
    path = Path(path)
    data = _safe_load(path, "a published DoRA checkpoint", "point at dora_params/epoch<e>_dora_params.pth.")
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(
            f"{path}: not a dict of tensors (the published epoch<e>_dora_params.pth format). "
            "Fix: point at a file the published trainer's save_dora_parameters wrote."
        )
    return {str(k): v for k, v in data.items()}


def load_published_adapters(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A published ``epoch{e}_dora_params.pth`` as the state dict ``CLIPHBA.load_adapter_state_dict``
    takes (``clip_model.`` keys renamed ``clip.``; an hba_dora model), its shapes checked."""
    raw = read_dora_params(path)
    problems = adapter_kinds.check_published_shapes(raw)
    if problems:
        raise CheckpointError(
            f"{path}: not a published DoRA checkpoint: {'; '.join(problems[:3])}. Fix: give a "
            "published dora_params/epoch<e>_dora_params.pth (keys clip_model.{visual.,}transformer."
            "resblocks.<i>.attn.out_proj.{m,delta_D_A,delta_D_B})."
        )
    return adapter_kinds.from_published_keys(raw)


def read_split_indices(path: str | os.PathLike) -> dict[str, list[int]]:
    """The published ``dataset_split_indices.pth``: ``{"train": [...], "val": [...]}`` row numbers in the
    published (``random_split``) order."""
    path = Path(path)
    data = _safe_load(path, "a published dataset split", "point at random_states/dataset_split_indices.pth.")
    try:
        train = [int(i) for i in data["train_indices"]]
        val = [int(i) for i in data["test_indices"]]
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(
            f"{path}: no train_indices/test_indices lists. Fix: point at the "
            "dataset_split_indices.pth the published trainer wrote."
        ) from None
    return {"train": train, "val": val}


# ---- a run folder -------------------------------------------------------------------------
@dataclass(frozen=True)
class PublishedRun:
    """A folder the published trainer wrote: ``training_res.csv``, ``dora_params/``, ``random_states/``."""

    root: Path

    @classmethod
    def open(cls, path: str | os.PathLike) -> PublishedRun:
        root = Path(path)
        if not (root / DORA_PARAMS).is_dir():
            raise CheckpointError(
                f"{root}: no {DORA_PARAMS}/ folder. Fix: point at a published run folder "
                f"(training_res.csv and {DORA_PARAMS}/epoch<e>_dora_params.pth) or one of ours."
            )
        return cls(root)

    @property
    def name(self) -> str:
        return self.root.name

    def epochs(self) -> list[int]:
        """Epochs with a ``dora_params/epoch{e}_dora_params.pth``, ascending."""
        found = (published_epoch(p) for p in (self.root / DORA_PARAMS).iterdir())
        return sorted(e for e in found if e is not None)

    def span(self) -> str:
        """The epochs the run has, for messages: "epochs a..b" or "no epoch"."""
        have = self.epochs()
        return f"epochs {have[0]}..{have[-1]}" if have else "no epoch"

    def dora_path(self, epoch: int) -> Path:
        return self.root / DORA_PARAMS / f"epoch{epoch}_dora_params.pth"

    def adapters(self, epoch: int) -> dict[str, torch.Tensor]:
        """The raw published tensors of ``epoch`` (keys ``clip_model....out_proj.{m,delta_D_A,delta_D_B}``)."""
        path = self.dora_path(epoch)
        if not path.is_file():
            raise CheckpointError(
                f"{path}: no checkpoint for epoch {epoch} (it has {self.span()}; the run may have "
                "stopped early). Fix: choose a finished epoch."
            )
        return read_dora_params(path)

    def metrics(self) -> list[dict[str, Any]]:
        """``training_res.csv`` rows (0-based epochs); empty if the file is absent."""
        path = self.root / TRAINING_RES
        return read_training_res(path) if path.is_file() else []

    def split(self) -> dict[str, list[int]] | None:
        """The split the run used, if it saved ``random_states/dataset_split_indices.pth``."""
        path = self.root / RANDOM_STATES / SPLIT_INDICES
        return read_split_indices(path) if path.is_file() else None


__all__ = ["PublishedRun", "load_published_adapters", "read_dora_params", "read_split_indices", "read_training_res"]
