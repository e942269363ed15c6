"""Before a driver runs a study: the study on storage found (``--resume`` of a missing one refused) and
the plan matched to its trials by identity (:mod:`hba_sweep.sweep.study_identity`); ``run --dry-run
--resume`` says what that would reuse, extend and add."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hba_sweep.artifacts import trialfiles
from hba_sweep.artifacts.identity import Identity
from hba_sweep.artifacts.manifest import has_manifest, read_manifest
from hba_sweep.foundation import storage
from hba_sweep.foundation.errors import ConfigError
from hba_sweep.sweep.options import RunOptions
from hba_sweep.sweep.plan import Plan
from hba_sweep.sweep.progress import plan_names
from hba_sweep.sweep.spec import SearchSpace
from hba_sweep.sweep.study_identity import Matching, apply_renames, match_plan, plan_identities, recorded_trials


@dataclass
class Planning:
    """The plan, each planned trial's identity, and how it matches the trials on storage."""

    plan: Plan | None
    identities: dict[str, Identity]
    matching: Matching


def match_stored(plan: Plan, root: str, old: dict[str, Any] | None, resume: bool) -> tuple[dict, Matching]:
    """Each planned trial's identity; on --resume matched to the trials on storage (renamed to theirs)."""
    identities = plan_identities(plan)
    if not resume:
        return identities, Matching()
    matching = match_plan(root, plan, identities, recorded_trials(root, (old or {}).get("trials", {})))
    apply_renames(plan, matching.renamed)
    return {matching.renamed.get(n, n): i for n, i in identities.items()}, matching


def resume_preview(space: SearchSpace, opts: RunOptions, plan: Plan) -> list[str]:
    """``run --dry-run --resume``: match the plan to the study on storage as ``--resume`` would (renaming
    the trials it reuses; a refusal is the same error) and say what would be reused, extended and new."""
    root = storage.experiment_root(opts.storage, opts.name or space.name)
    old = read_manifest(root)
    refuse_missing(root, old)
    _, matching = match_stored(plan, root, old, resume=True)
    names = plan_names(plan)
    done = sum(trialfiles.read_done(trialfiles.trial_path(root, n)) is not None for n in names)
    stored = sum(storage.is_dir(trialfiles.trial_path(root, n)) for n in names)
    return [
        *matching.notes,
        f"with --resume at {storage.redact(root)}: {stored} of {len(names)} trials are on storage ({done} finished"
        + (f", {len(matching.extend)} to extend" if matching.extend else "")
        + f"), {len(names) - stored} new",
    ]


def refuse_missing(root: str, old: dict[str, Any] | None) -> None:
    """--resume of a study that is not there is an error naming where it looked (and what is there)."""
    if old is not None or storage.listdir(root):  # a driver killed before study.json left its lock or files
        return
    parent = storage.parent(root)
    here = sorted(n for n in storage.listdir(parent) if has_manifest(storage.join(parent, n)))
    raise ConfigError(
        f"{storage.redact(root)}: no study to resume there (the folder is missing or empty). "
        + (f"Studies in {storage.redact(parent)}: {', '.join(here)}. " if here else "")
        + "Fix: check --storage and --name (or the search space's NAME), or drop --resume to start it."
    )
