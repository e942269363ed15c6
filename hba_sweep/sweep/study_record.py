"""``<study>/README.md``: a record of the study, written when ``run`` starts and updated when it ends.

It holds the question (perturbation types x start epochs x lengths x seeds, or the searched
space), the exact command, the base config, the versions of this product and of its key packages,
the machine and its GPUs, each run of the driver with its counts, and the commands to check the
status and analyse. Written through the storage module (atomically on a local path; studies may
live on object storage).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shlex
import socket
import sys
import time

import ray
import torch
import yaml

import hba_sweep
from hba_sweep.foundation import storage
from hba_sweep.sweep.plan import Plan
from hba_sweep.sweep.spec import SearchSpace

README = "README.md"
PACKAGES = ("torch", "ray", "open_clip_torch", "peft", "optuna", "pyarrow")
AXES = (
    ("perturb_type", "perturbation types"),
    ("perturb_epoch", "start epochs"),
    ("perturb_length", "lengths"),
    ("random_seed", "init seeds"),
    ("perturb_seed", "perturbation seeds"),
)


def command_line(space: SearchSpace) -> str:
    """The command that started this driver, as a shell takes it."""
    argv0 = os.path.basename(sys.argv[0]) if sys.argv else ""
    if argv0 in ("__main__.py", "hba_sweep") and len(sys.argv) > 1:
        return shlex.join(["python", "-m", "hba_sweep", *sys.argv[1:]])
    return shlex.join(["python", "-m", "hba_sweep", "run", str(space.path)])  # called from Python (tests)


def question(space: SearchSpace, plan: Plan | None) -> str:
    """'2 perturbation types (label_shuffle, random_target) x 2 start epochs (1, 2) x ... = 8 perturbed + 2 baselines'."""
    if space.uses_searcher or plan is None:
        varied = ", ".join(space.param_space)
        return f"{space.num_samples} trials searched by {space.metric} ({space.mode}) over: {varied}"
    trials = [*plan.baselines, *plan.independent, *(f.trial for f in plan.forks)]
    perturbed = [t.config for t in trials if t.config.get("perturb_type") != "none"]
    parts = []
    for key, label in AXES:
        values = sorted({c.get(key) for c in perturbed}, key=str)
        if values:
            parts.append(f"{len(values)} {label} ({', '.join(str(v) for v in values)})")
    baselines = len(trials) - len(perturbed)
    shape = " x ".join(parts) if parts else "no perturbed trials"
    return f"{shape} = {len(perturbed)} perturbed trials + {baselines} baseline(s) ({len(trials)} trials)"


def versions() -> list[str]:
    out = [f"hba_sweep {hba_sweep.__version__}", f"python {platform.python_version()}"]
    for name in PACKAGES:
        try:
            out.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def machine() -> list[str]:
    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    )
    lines = [
        f"driver host: {socket.gethostname()} ({platform.platform()}, {os.cpu_count()} CPUs)",
        f"driver GPUs: {', '.join(gpus) if gpus else 'none'}",
    ]
    if ray.is_initialized():
        have = ray.cluster_resources()
        lines.append(
            f"Ray cluster: {have.get('CPU', 0):g} CPUs, {have.get('GPU', 0):g} GPUs, {len(ray.nodes())} node(s)"
        )
    return lines


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %z")


class StudyRecord:
    """The README of one study: :meth:`started` when the driver starts, :meth:`ended` when it ends."""

    def __init__(self, root: str, space: SearchSpace, plan: Plan | None):
        self.root, self.space, self.plan = root, space, plan
        self.path = storage.join(root, README)
        self.runs: list[str] = self._earlier_runs()
        self.command = command_line(space)

    def _earlier_runs(self) -> list[str]:
        """The run lines of an earlier README (a --resume keeps the history)."""
        if not storage.exists(self.path):
            return []
        text = storage.read_text(self.path)
        section = text.split("\n## Runs\n", 1)[-1].split("\n## ", 1)[0] if "\n## Runs\n" in text else ""
        return [line for line in section.splitlines() if line.startswith("- ")]

    def started(self) -> None:
        self.runs.append(f"- {_now()}: started `{self.command}`")
        self._write()

    def ended(self, finished: int, failed: int, skipped: int, unfinished: int) -> None:
        state = "interrupted" if unfinished else "ended"
        self.runs[-1] += (
            f"; {state} {_now()}: {finished} finished, {failed} failed, {skipped} skipped, {unfinished} not finished"
        )
        self._write()

    def _write(self) -> None:
        where = shlex.quote(storage.redact(self.root))
        base = yaml.safe_dump(self.space.base, sort_keys=True).rstrip()
        resume = self.command if "--resume" in self.command.split() else f"{self.command} --resume"
        text = "\n".join(
            [
                f"# Study {self.space.name}",
                "",
                f"Search space: `{self.space.path}`  ",
                f"Experiment: `{storage.redact(self.root)}`",
                "",
                "## Question",
                "",
                question(self.space, self.plan),
                "",
                "## Command",
                "",
                "```",
                self.command,
                "```",
                "",
                "## Base config",
                "",
                f"From `{self.space.base_source}`:",
                "",
                "```yaml",
                base,
                "```",
                "",
                "## Versions",
                "",
                *[f"- {v}" for v in versions()],
                "",
                "## Machine",
                "",
                *[f"- {m}" for m in machine()],
                "",
                "## Runs",
                "",
                *self.runs,
                "",
                "## Next",
                "",
                "```",
                f"python -m hba_sweep status {where}",
                f"{resume}   # finish or grow the study",
                f"python -m hba_sweep analyze {where}",
                "```",
                "",
            ]
        )
        storage.write_text(self.path, text)
