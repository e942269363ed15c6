"""The train/validation split: drawn as published, pinned from a file, recorded and checked by image name.

- :func:`draw_split`: the published ``random_split``: after ``torch.manual_seed(random_seed)`` (the
  published ``seed_everything``) ``torch.randperm(N)``; the first ``int(train_portion * N)`` rows train,
  the rest validate, both in that permuted order (the order the published ``Subset`` feeds its
  DataLoader). A fresh generator seeded with ``random_seed`` gives the same permutation.
- :func:`epoch_order`: the training order of one epoch as the published ``DataLoader(shuffle=True,
  generator=g)`` draws it from ``g``: the iterator's base seed (one int64), then ``randperm(n)``, then
  the sampler's second (empty) ``randperm(n)`` for the remainder.
- :func:`split_from_file`: ``split_file:`` -- a JSON/CSV list of validation image names (or our
  ``split.json``), or the published ``random_states/dataset_split_indices.pth``.
- :class:`SplitRecord`: the split by image name with a digest of each image's targets; a resumed or
  forked run maps the names onto the current annotation file (a reordered CSV gives the same split)
  and refuses missing, added-to-split or edited rows with the images named.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hba_sweep.artifacts.published import read_split_indices
from hba_sweep.config import split_sizes
from hba_sweep.foundation.errors import ConfigError, DataError
from hba_sweep.foundation.io_utils import atomic_write_text


def draw_split(n: int, train_portion: float, seed: int) -> tuple[list[int], list[int]]:
    """The published split of ``n`` rows: (train rows, validation rows) in ``random_split`` order."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_train, _ = split_sizes(n, train_portion)
    return order[:n_train], order[n_train:]


def epoch_order(n: int, generator: torch.Generator) -> torch.Tensor:
    """Positions ``0..n-1`` in the order one published DataLoader epoch visits them (advances ``generator``)."""
    torch.empty((), dtype=torch.int64).random_(generator=generator)  # the DataLoader iterator's _base_seed
    order = torch.randperm(n, generator=generator)
    torch.randperm(n, generator=generator)  # RandomSampler draws again for num_samples % n (empty)
    return order


def _names_in_file(path: Path) -> tuple[list[str] | None, list[str]]:
    """(train names or None, validation names) from a JSON or CSV split file."""
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"{path}: split_file is not valid JSON ({exc}). Fix: write a list of validation "
                'image names, or {"val": [...]} (optionally with "train").'
            ) from None
        if isinstance(data, list):
            return None, [str(x) for x in data]
        if isinstance(data, dict) and isinstance(data.get("val"), list):
            train = data.get("train")
            return ([str(x) for x in train] if isinstance(train, list) else None), [str(x) for x in data["val"]]
        raise ConfigError(
            f'{path}: split_file holds neither a list of names nor a "val" list. Fix: write '
            'a list of validation image names, or {"val": [...]}.'
        )
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path}: split_file is not a readable CSV ({exc}). Fix: one column image_name "
            "listing the validation images."
        ) from None
    column = "image_name" if "image_name" in frame.columns else frame.columns[0]
    return None, [str(x) for x in frame[column] if str(x).strip()]


def split_from_file(
    path: str | os.PathLike, names: Sequence[str], annotations: str | os.PathLike
) -> tuple[list[int], list[int]]:
    """(train rows, validation rows) pinned by ``split_file``; ConfigError naming unknown images."""
    path = Path(path)
    n = len(names)
    if path.suffix.lower() in (".pth", ".pt"):
        split = read_split_indices(path)
        bad = [i for i in split["train"] + split["val"] if not 0 <= i < n]
        if bad or set(split["train"]) & set(split["val"]):
            raise ConfigError(
                f"{path}: indices {'out of range for ' + str(n) + ' rows' if bad else 'in both halves'} "
                f"of {annotations}. Fix: use the split file of a run on this annotation file."
            )
        return split["train"], split["val"]
    train_names, val_names = _names_in_file(path)
    row = {name: i for i, name in enumerate(names)}
    unknown = [x for x in val_names + (train_names or []) if x not in row]
    if unknown:
        raise ConfigError(
            f"{path}: {len(unknown)} image name(s) not in {annotations}, e.g. {unknown[:3]}. "
            "Fix: list images of the annotation file (column image_name)."
        )
    val = [row[x] for x in val_names]
    if not val:
        raise ConfigError(f"{path}: lists no validation images. Fix: list at least one image name.")
    chosen = set(val)
    train = [row[x] for x in train_names] if train_names is not None else [i for i in range(n) if i not in chosen]
    if chosen & set(train):
        raise ConfigError(f"{path}: some images are in both train and val. Fix: list each image once.")
    return train, val


def row_digest(targets: torch.Tensor | np.ndarray) -> str:
    """A short digest of one row of targets (float32 bytes)."""
    values = np.ascontiguousarray(np.asarray(targets, dtype=np.float32))
    return hashlib.sha256(values.tobytes()).hexdigest()[:16]


@dataclass
class SplitRecord:
    """A split by image name, with each image's target digest and image-file SHA-256 (what resume and
    forks check)."""

    train: list[str]
    val: list[str]
    digests: dict[str, str]
    images: dict[str, str] = field(default_factory=dict)  # name -> SHA-256 of the image file

    @classmethod
    def of(
        cls,
        names: Sequence[str],
        targets: torch.Tensor,
        train_idx: Sequence[int],
        val_idx: Sequence[int],
        image_digests: Sequence[str] = (),
    ) -> SplitRecord:
        rows = list(train_idx) + list(val_idx)
        return cls(
            [names[i] for i in train_idx],
            [names[i] for i in val_idx],
            {names[i]: row_digest(targets[i]) for i in rows},
            {names[i]: image_digests[i] for i in rows} if image_digests else {},
        )

    def indices(
        self,
        names: Sequence[str],
        targets: torch.Tensor,
        annotations: str | os.PathLike,
        source: str | os.PathLike,
        image_digests: Sequence[str] = (),
    ) -> tuple[list[int], list[int]]:
        """The split's rows in the current annotation file; DataError naming what changed."""
        row = {name: i for i, name in enumerate(names)}
        missing = [x for x in self.train + self.val if x not in row]
        if missing:
            raise DataError(
                f"{annotations}: {len(missing)} image(s) of the split recorded in {source} are no longer "
                f"in the annotation file, e.g. {missing[:3]}. Fix: restore the annotation file the run "
                "was started with, or start a new run (another run_name/save_path)."
            )
        changed = [
            x for x in self.train + self.val if x in self.digests and self.digests[x] != row_digest(targets[row[x]])
        ]
        if changed:
            raise DataError(
                f"{annotations}: the targets of {len(changed)} image(s) changed since the split recorded "
                f"in {source} was made, e.g. {changed[:3]}. Fix: restore the annotation file the run "
                "was started with, or start a new run (another run_name/save_path)."
            )
        now = {x: image_digests[row[x]] for x in self.train + self.val} if image_digests else {}
        redrawn = [x for x, sha in now.items() if self.images.get(x, sha) != sha]
        if redrawn:
            raise DataError(
                f"{annotations}: the image files of {len(redrawn)} image(s) of the split recorded in {source} "
                f"changed since, e.g. {redrawn[:3]}. Fix: restore the images the run was trained on, or start a "
                "new run (another run_name/save_path)."
            )
        return [row[x] for x in self.train], [row[x] for x in self.val]

    def to_json(self, annotations: str | os.PathLike, train_idx: Sequence[int], val_idx: Sequence[int]) -> dict:
        return {
            "annotations_file": str(annotations),
            "train": self.train,
            "val": self.val,
            "train_indices": list(train_idx),
            "val_indices": list(val_idx),
            "target_digests": self.digests,
        }

    def same_split(self, recorded: dict) -> bool:
        return recorded.get("train") == self.train and recorded.get("val") == self.val


def write_split_json(
    path: Path, record: SplitRecord, annotations: str | os.PathLike, train_idx: Sequence[int], val_idx: Sequence[int]
) -> None:
    """``split.json``: written once; an existing one recording another split is an error, never overwritten."""
    if path.is_file():
        try:
            recorded = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            recorded = {}
        if record.same_split(recorded):
            return
        raise DataError(
            f"{path}: records another split than this run uses (the annotation file or split settings "
            "changed); it is kept, not overwritten. Fix: restore the annotation file, or start a new "
            "run (another run_name/save_path)."
        )
    atomic_write_text(path, json.dumps(record.to_json(annotations, train_idx, val_idx)))
