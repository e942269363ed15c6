"""What a gathered study is made of: trials, their epoch checkpoints, the (trial, epoch) entries
and the study itself. Filled by :mod:`analysis.gather` (our and Tune's runs) and
:mod:`analysis.published_runs` (published run folders)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hba_sweep.foundation.storage import FileSystem


@dataclass
class Checkpoint:
    """One epoch checkpoint on the experiment's filesystem."""

    path: str  # directory holding meta.json and adapter.safetensors
    epoch: int
    adapter_sha256: str  # recorded in meta.json; also the content key of the adapters
    config: dict[str, Any]


@dataclass
class Trial:
    """One trial (or run): its settings, training history and checkpoints by epoch."""

    trial_id: str  # Tune's trial id (unique per trial), else the run directory's name
    directory: str
    config: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: dict[int, Checkpoint] = field(default_factory=dict)
    baseline_id: str | None = None
    label: str = ""  # readable name: the trial's run_name (the study manifest's key)
    role: str | None = None  # from the manifest: "baseline", "perturbed", "trial"; None without one
    status: str | None = None  # from the manifest, e.g. "skipped", with its reason in ``note``
    note: str | None = None
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # meta.json "inputs": role -> {path, sha256}
    version: str = ""  # meta.json "version": the product version that trained it ("" in older checkpoints)
    study_dir: str | None = None  # the folder of the study.json the trial belongs to (None: no study)

    @property
    def is_baseline(self) -> bool:
        if self.role is not None:
            return self.role == "baseline"
        return self.config.get("perturb_type", "none") == "none"

    @property
    def inherited_epochs(self) -> list[int]:
        return sorted(int(r["epoch"]) for r in self.history if r.get("inherited"))


@dataclass
class EpochEntry:
    """A row of the study: trial x epoch -> the checkpoint that holds that epoch's weights."""

    trial_id: str
    epoch: int
    inherited: bool
    checkpoint: Checkpoint


@dataclass
class Study:
    root: str
    filesystem: FileSystem
    trials: dict[str, Trial]
    entries: list[EpochEntry]
    manifest: dict[str, Any] | None
    skipped: list[str]
    duplicates: list[str] = field(default_factory=list)  # report lines: trials left out as another's duplicate
