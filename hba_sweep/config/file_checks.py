"""The training config's file checks: the data files and folders it names exist, both sides of
the train/validation split get an image, a pinned split or a baseline run is there."""

from __future__ import annotations

import csv
import functools
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the schema imports these checks; the checks need its type only
    from hba_sweep.config.train_config import TrainConfig


# The settings file_problems reads: configs equal on these have the same problems (their source aside).
FILE_CHECK_FIELDS = (
    "img_dir",
    "img_annotations_file",
    "train_portion",
    "behavioral_rsa",
    "rsa_annotations_file",
    "rsa_img_dir",
    "behavioral_rdm_file",
    "split_file",
    "baseline_checkpoint_path",
    "perturb_epoch",
    "init_from",
    "resume_from",
)


def split_sizes(n: int, train_portion: float) -> tuple[int, int]:
    """(training, validation) image counts of a split of ``n`` rows: ``int(train_portion * n)`` for
    training, as the published ``random_split`` sizes (1444/362 of 1806)."""
    n_train = int(train_portion * n)
    return n_train, n - n_train


@functools.lru_cache(maxsize=64)
def _csv_rows(path: str, mtime_ns: int, size: int) -> int | None:
    """Data rows of a CSV (blank lines left out); None if it cannot be read (the loader says why)."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return max(0, sum(1 for row in csv.reader(fh) if any(cell.strip() for cell in row)) - 1)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None


def _check_split(cfg: TrainConfig, source: str) -> list[str]:
    """Both sides of the train/validation split must hold at least one image."""
    path = cfg.img_annotations_file
    st = os.stat(path)
    n = _csv_rows(os.path.abspath(path), st.st_mtime_ns, st.st_size)
    if not n:  # unreadable or empty: the CSV loader reports it with the row and column
        return []
    n_train, n_val = split_sizes(n, cfg.train_portion)
    if n_train and n_val:
        return []
    fix = (
        "add rows to the file (at least 2 images)"
        if n < 2
        else f"add rows, or set train_portion so that both sides get an image (e.g. 0.5 for {n} images)"
    )
    return [
        f"{source}: img_annotations_file={path!r} has {n} image(s); train_portion={cfg.train_portion} gives "
        f"{n_train} training and {n_val} validation image(s), and neither may be empty. Fix: {fix}."
    ]


def file_problems(cfg: TrainConfig, source: str) -> list[str]:
    """Missing or unreadable files and folders the config names, and an empty side of the split."""
    needed = {"img_dir": "dir", "img_annotations_file": "file"}
    if cfg.behavioral_rsa:
        needed.update(rsa_annotations_file="file", rsa_img_dir="dir", behavioral_rdm_file="file")
    problems = []
    for key, kind in needed.items():
        value = getattr(cfg, key)
        if value is None:
            hint = " or set behavioral_rsa: false" if key.startswith(("rsa", "behavioral")) else ""
            problems.append(f"{source}: {key} is missing. Fix: give the path of the {kind}{hint}.")
        elif kind == "file" and not os.path.isfile(value):
            problems.append(f"{source}: {key}={value!r}: no such file. Fix: correct the path.")
        elif kind == "dir" and not os.path.isdir(value):
            problems.append(f"{source}: {key}={value!r}: no such directory. Fix: correct the path.")
    if cfg.img_annotations_file is not None and os.path.isfile(cfg.img_annotations_file) and cfg.split_file is None:
        problems += _check_split(cfg, source)
    if cfg.split_file is not None and not os.path.isfile(cfg.split_file):
        problems.append(
            f"{source}: split_file={cfg.split_file!r}: no such file. Fix: give a JSON/CSV list of "
            "validation image names or a published dataset_split_indices.pth, or remove the key."
        )
    if uses_baseline_path(cfg) and not os.path.isdir(str(cfg.baseline_checkpoint_path)):
        problems.append(
            f"{source}: baseline_checkpoint_path={cfg.baseline_checkpoint_path!r}: no such directory "
            f"(perturb_epoch={cfg.perturb_epoch} forks from its epoch {cfg.perturb_epoch - 1}). Fix: give "
            "the baseline run's folder (a published one or one of ours), or set perturb_epoch: 0."
        )
    return problems


def uses_baseline_path(cfg: TrainConfig) -> bool:
    """Whether the run forks from ``baseline_checkpoint_path`` (published: only when perturb_epoch > 0)."""
    return (
        bool(cfg.baseline_checkpoint_path)
        and cfg.perturb_epoch > 0
        and cfg.init_from is None
        and cfg.resume_from is None
    )
