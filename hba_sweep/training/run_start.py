"""Where a training run starts: fresh, resumed from its own checkpoint, forked from another run's
checkpoint, or forked from a published run folder; and the state (split, shuffle order, optimizer,
schedule, metrics so far) each start gives ``run_training_experiment``.

A fork whose source lacks the epoch it needs is an error, never a fresh run. A resumed or forked
run must keep the settings that define the computation so far (``check_compatible``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch

from hba_sweep.artifacts import checkpoint as ckpt
from hba_sweep.artifacts.identity import describe_change
from hba_sweep.artifacts.layout import is_published_run
from hba_sweep.artifacts.published import PublishedRun, load_published_adapters
from hba_sweep.config import (
    FORK_MAY_CHANGE,
    PATH_FIELDS,
    RESUME_MAY_CHANGE,
    TrainConfig,
    run_name,
    uses_baseline_path,
)
from hba_sweep.data.things import ThingsDataset
from hba_sweep.foundation import content_hash
from hba_sweep.foundation.errors import CheckpointError, ConfigError
from hba_sweep.model import CLIPHBA
from hba_sweep.training.split import SplitRecord, draw_split, epoch_order, split_from_file


def check_compatible(cfg: TrainConfig, source_config: dict, may_change: set[str], what: str, source: Path) -> None:
    """A resumed or forked run must keep the settings that define the computation so far."""
    differ = sorted(
        k for k, v in cfg.to_dict().items() if k not in may_change and k in source_config and source_config[k] != v
    )
    if differ:
        detail = ", ".join(f"{k}: {source_config[k]!r} -> {getattr(cfg, k)!r}" for k in differ)
        raise ConfigError(
            f"{what} from {source}: settings differ ({detail}). Fix: use the source run's values or start a new run."
        )


def check_same_inputs(inputs: dict | None, recorded: dict | None, what: str, source: Path) -> None:
    """A resumed or forked run reads the same file contents its source was trained on (inputs both
    recorded: checkpoints written before inputs were recorded are not checked). The annotation CSV and its
    images are checked finer by the split record (each image of the split by name: its target digest and
    its file's SHA-256; the rows may be reordered)."""
    if not inputs or not recorded:
        return
    shared = sorted((set(inputs) & set(recorded)) - {"img_annotations_file", "images"})
    changed = [
        f"{role}: {describe_change(recorded[role], inputs[role])}"
        for role in shared
        if recorded[role].get("sha256") != inputs[role].get("sha256")
    ]
    if changed:
        raise ConfigError(
            f"{what} from {source}: its input files differ from those it was trained on ("
            + "; ".join(changed)
            + "). Fix: restore the files it was trained on, or start a new run (a new study name) with the new files."
        )


class StartKind(StrEnum):
    """How a run starts; the value is meta.json's ``start``."""

    FRESH = "fresh"  # nothing evaluated yet: the run begins with the initial evaluation (epoch -1)
    RESUMED = "resumed"  # our checkpoint of this run
    FORKED = "forked"  # our checkpoint of another run
    FORKED_PUBLISHED = "forked_published"  # a published run folder's dora_params

    @property
    def is_fork(self) -> bool:
        return self in (StartKind.FORKED, StartKind.FORKED_PUBLISHED)


@dataclass
class Start:
    """Where a run starts: its :class:`StartKind`, the checkpoint or published folder (``path``) and,
    for a fork, the source's ``epoch`` it continues from."""

    kind: StartKind
    path: Path | None = None
    epoch: int | None = None


def start_source(cfg: TrainConfig, out: Path) -> Start:
    """Where the run starts. A fork whose source lacks the epoch it needs is an error, never a fresh run."""
    if cfg.resume_from is not None:
        return Start(StartKind.RESUMED, ckpt.resolve_checkpoint(cfg.resume_from))
    if cfg.init_from is not None:
        return Start(StartKind.FORKED, fork_checkpoint(cfg.init_from, cfg.init_epoch, cfg), cfg.init_epoch)
    if uses_baseline_path(cfg):
        epoch, root = cfg.perturb_epoch - 1, Path(str(cfg.baseline_checkpoint_path))
        if is_published_run(root):
            run = PublishedRun.open(root)
            if not run.dora_path(epoch).is_file():
                fork_checkpoint_error(
                    cfg, epoch, f"{run.dora_path(epoch)} is missing (the published run has {run.span()})."
                )
            if cfg.fork_early_stopping == "inherit":
                raise ConfigError(
                    f"fork_early_stopping=inherit: the published run {root} does not record its "
                    "early-stopping counter. Fix: use fork_early_stopping: reset (as published)."
                )
            return Start(StartKind.FORKED_PUBLISHED, root, epoch)
        return Start(StartKind.FORKED, fork_checkpoint(root, epoch, cfg), epoch)
    if ckpt.list_epochs(out):
        raise ConfigError(
            f"{out}: this run already has checkpoints. Fix: add --resume (resume_from: {out}) to "
            "continue it, choose another save_path/run_name, or delete the directory."
        )
    return Start(StartKind.FRESH)


def fork_checkpoint(source: str | Path, epoch: int | None, cfg: TrainConfig) -> Path:
    try:
        return ckpt.resolve_checkpoint(source, epoch)
    except CheckpointError as exc:
        fork_checkpoint_error(cfg, epoch, str(exc))


def fork_checkpoint_error(cfg: TrainConfig, epoch: int | None, detail: str) -> None:
    raise CheckpointError(
        f"fork of run {run_name(cfg)} (perturb_epoch={cfg.perturb_epoch}) starts from its baseline's state after "
        f"epoch {epoch}, which does not exist: {detail} A fork is never trained from scratch instead. Fix: the "
        "baseline stopped early (or is unfinished): drop this trial, or finish the baseline first."
    )


def fresh_state(
    cfg: TrainConfig, dataset: ThingsDataset, split: tuple[list[int], list[int]] | None = None, epoch: int | None = None
) -> ckpt.TrainingState:
    """A state with the split (drawn as published, or pinned by ``split_file``) and a shuffle generator
    seeded with ``random_seed``; ``epoch`` None: nothing evaluated yet (a fresh run)."""
    if cfg.split_file is not None:
        split = split_from_file(cfg.split_file, dataset.names, dataset.annotations_file)
    train_idx, val_idx = split or draw_split(len(dataset), cfg.train_portion, cfg.random_seed)
    if not train_idx or not val_idx:
        raise ConfigError(
            f"{dataset.annotations_file}: the split of {len(dataset)} images leaves "
            f"{len(train_idx)} for training and {len(val_idx)} for validation. Fix: set train_portion "
            "so both get at least one image, or give more images."
        )
    state = ckpt.TrainingState(
        epoch=epoch,
        optimizer={},
        scheduler=None,
        shuffle_generator=torch.Generator().manual_seed(cfg.random_seed).get_state(),
    )
    record = SplitRecord.of(dataset.names, dataset.targets, train_idx, val_idx, image_digests(dataset))
    set_split(state, record, train_idx, val_idx)
    return state


def image_digests(dataset: ThingsDataset) -> list[str]:
    """The SHA-256 of each image file of ``dataset`` (memoised per node); empty when one is unreadable
    (the dataset's own checks name it)."""
    try:
        return content_hash.file_digests(dataset.image_paths)
    except OSError:
        return []


def set_split(state: ckpt.TrainingState, record: SplitRecord, train_idx: list[int], val_idx: list[int]) -> None:
    state.train_indices, state.val_indices = list(train_idx), list(val_idx)
    state.train_names, state.val_names, state.target_digests = record.train, record.val, record.digests
    state.image_digests = record.images


def start_state(
    start: Start,
    cfg: TrainConfig,
    model: CLIPHBA,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    dataset: ThingsDataset,
    log: Callable[[str], None],
    inputs: dict[str, dict] | None = None,
) -> tuple[ckpt.TrainingState, list[dict]]:
    """The training state and the metrics rows so far, for each kind of start (``inputs``: this run's
    input digests, which a resumed or forked source must have recorded alike)."""
    if start.kind is StartKind.FRESH:
        return fresh_state(cfg, dataset), []
    if start.kind is StartKind.FORKED_PUBLISHED:
        return published_fork_state(start, cfg, model, scheduler, dataset, log)
    state, history = restore(start.path, start.kind, cfg, model, optimizer, scheduler, inputs)
    if state.train_names:  # the split by image name, mapped onto the current annotation file
        record = SplitRecord(state.train_names, state.val_names, state.target_digests, state.image_digests)
        digests = image_digests(dataset)
        train_idx, val_idx = record.indices(
            dataset.names, dataset.targets, dataset.annotations_file, start.path, digests
        )
        if not record.images and digests:  # an older checkpoint: its images are recorded from now on
            split = set(record.train) | set(record.val)
            record.images = {n: d for n, d in zip(dataset.names, digests, strict=True) if n in split}
    else:  # a checkpoint written before splits were recorded by name
        train_idx, val_idx = state.train_indices, state.val_indices
        if max(train_idx + val_idx, default=-1) >= len(dataset):
            raise ConfigError(
                f"{dataset.annotations_file}: has {len(dataset)} rows but the split of {start.path} "
                "names higher rows. Fix: use the annotation file the run was started with."
            )
        record = SplitRecord.of(dataset.names, dataset.targets, train_idx, val_idx, image_digests(dataset))
    set_split(state, record, train_idx, val_idx)
    log(f"{start.kind.value} from {start.path} (epoch {state.epoch})")
    return state, history


def published_fork_state(
    start: Start, cfg: TrainConfig, model: CLIPHBA, scheduler: Any, dataset: ThingsDataset, log: Callable[[str], None]
) -> tuple[ckpt.TrainingState, list[dict]]:
    """A fork of a published run folder after epoch ``start.epoch``.

    Restored: the adapters of ``dora_params/epoch{e}_dora_params.pth``; the split of
    ``random_states/dataset_split_indices.pth`` (else drawn as published); the LR schedule and the
    shuffle generator, which depend only on the seed, advanced through epochs 0..e. Not restored (a
    documented difference): AdamW's moments start fresh (the published ``epoch{e}_random_states.pth``
    is a pickle keyed by the published model's parameter order and is not read).
    """
    run = PublishedRun.open(start.path)
    model.load_adapter_state_dict(load_published_adapters(run.dora_path(start.epoch)))
    split = run.split()
    if split is not None:
        if max(split["train"] + split["val"], default=-1) >= len(dataset):
            raise ConfigError(
                f"{run.root}: its dataset split names rows beyond the {len(dataset)} of "
                f"{dataset.annotations_file}. Fix: use the annotation file that run was trained on."
            )
        split = (split["train"], split["val"])
    state = fresh_state(cfg, dataset, split, epoch=start.epoch)
    shuffle = torch.Generator().set_state(state.shuffle_generator)
    for _ in range(start.epoch + 1):
        epoch_order(len(state.train_indices), shuffle)
        if scheduler is not None:
            with warnings.catch_warnings():  # stepped without optimizer steps on purpose: the schedule replayed
                warnings.simplefilter("ignore", UserWarning)
                scheduler.step()
    state.shuffle_generator = shuffle.get_state()
    state.scheduler = scheduler.state_dict() if scheduler is not None else None
    history = [
        {**row, "inherited": True, "perturbation_active": False} for row in run.metrics() if row["epoch"] <= start.epoch
    ]
    log(
        f"forked from the published run {run.root} after epoch {start.epoch}: adapters restored, optimizer state "
        "fresh (not in the published adapters), LR schedule and shuffle order advanced to that epoch"
    )
    return state, history


def restore(
    source: Path,
    kind: StartKind,
    cfg: TrainConfig,
    model: CLIPHBA,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    inputs: dict[str, dict] | None = None,
) -> tuple[ckpt.TrainingState, list[dict]]:
    """Load a checkpoint's adapters and full state into this run."""
    adapters, state, meta = ckpt.load_checkpoint(source)
    may_change = RESUME_MAY_CHANGE if kind is StartKind.RESUMED else FORK_MAY_CHANGE
    if inputs and meta.get("inputs"):  # the files' contents are compared: the data may have moved
        may_change = may_change | set(PATH_FIELDS)
    check_compatible(cfg, meta["config"], may_change, kind.value, source)
    check_same_inputs(inputs, meta.get("inputs"), kind.value, source)
    model.load_adapter_state_dict(adapters)
    optimizer.load_state_dict(state.optimizer)
    if scheduler is not None and state.scheduler is not None:
        scheduler.load_state_dict(state.scheduler)
    ckpt.restore_rng(state.rng)
    history = [dict(row) for row in meta["metrics"]]
    if kind is StartKind.FORKED:
        history = [{**row, "inherited": True} for row in history]
    return state, history
