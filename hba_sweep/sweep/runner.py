"""Run a study on Ray Tune: one Tune experiment at ``<storage>/<NAME>/``, one driver at a time.

Layout of ``<storage>/<NAME>/``: ``study.json`` (the manifest: every planned trial, its baseline
and fork source, its state, each extension of the space), ``driver.lock`` while a driver runs,
Tune's files (readable with ``ray.tune.ExperimentAnalysis``, ``Tuner.restore`` and TensorBoard)
and one directory per trial, named by its run name. Trials are released by
:class:`~hba_sweep.sweep.release.StudySearcher`: forks start as soon as their baseline epoch exists.

Every run of the driver (first run, ``--resume``, a grown space) builds a fresh Tuner over the
same experiment: what is finished is read from the trials' own files (``done.json``), unfinished
trials continue from their last checkpoint on storage, new trials of an edited space are added.
Tune's own restore is used for searched spaces only (it cannot add trials to a finished search).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import ray
from ray import tune

from hba_sweep.artifacts import trialfiles
from hba_sweep.artifacts.identity import PLANNED_IDENTITY, Identity, planned_identity
from hba_sweep.artifacts.manifest import Manifest, read_manifest, refuse_existing
from hba_sweep.config import from_dict, run_name
from hba_sweep.foundation import safe_paths, storage
from hba_sweep.foundation.errors import ConfigError
from hba_sweep.foundation.faults import kill_point
from hba_sweep.perturbations import user_types
from hba_sweep.sweep import cluster, lock, terminal, trackers
from hba_sweep.sweep.expand import Expansion, Trial, expand
from hba_sweep.sweep.options import RunOptions
from hba_sweep.sweep.plan import Plan, make_plan
from hba_sweep.sweep.progress import TrialStarts, all_finished, plan_names, record_nothing_left
from hba_sweep.sweep.quiet import log_path, quiet_terminal
from hba_sweep.sweep.release import Planned, StudySearcher
from hba_sweep.sweep.spec import SearchSpace, instantiate, reload_base
from hba_sweep.sweep.study_identity import Matching, extend_trials
from hba_sweep.sweep.study_manifest import make_manifest
from hba_sweep.sweep.study_match import Planning, match_stored, refuse_missing
from hba_sweep.sweep.study_record import StudyRecord
from trainables.hba_trainable import train_hba

PENDING_ENV = "TUNE_MAX_PENDING_TRIALS_PG"
METRIC_COLUMNS = {"epoch": "epoch", "val_loss": "val_loss", "behavioral_rsa_rho": "rsa_rho"}


@dataclass
class StudyOutcome:
    root: str
    ok: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)  # not finished when the run was stopped (Ctrl+C)
    nothing_left: bool = False  # --resume found every trial finished: Ray was not started

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 0 if not self.failed and not self.skipped else 1


# ---- Ray --------------------------------------------------------------------------------
def connect(opts: RunOptions) -> bool:
    """Start or join Ray (hba_sweep/sweep/cluster.py); True if this call connected."""

    if ray.is_initialized():
        return False
    address, origin = (opts.address, "--address") if opts.address else (os.environ.get("RAY_ADDRESS"), "RAY_ADDRESS")
    cluster.connect(address, origin, opts.dashboard, opts.dashboard_host, opts.echo, **opts.ray_init)
    return True


def _callbacks(opts: RunOptions, name: str, root: str | None = None) -> list:
    """TensorBoard, MLflow, W&B with the epoch as x-axis (hba_sweep/sweep/trackers.py); W&B's local
    files go to ``<root>/wandb`` when the study is on a local path."""
    wandb_dir = os.path.abspath(root) if root is not None and not storage.is_uri(root) else None
    return trackers.callbacks(opts.mlflow_uri, opts.wandb_project, name, wandb_dir)


def _trainable(space: SearchSpace, opts: RunOptions, root: str, finished: set[str]):
    # perturbation types the search-space file registered: workers never execute that file
    fn = tune.with_parameters(train_hba, perturbations=user_types(), study_root=root, finished=frozenset(finished))
    return tune.with_resources(fn, trial_resources(space, opts))


def trial_resources(space: SearchSpace, opts: RunOptions) -> dict[str, float]:
    """RESOURCES of the search-space file, with --cpus-per-trial / --gpus-per-trial applied."""
    resources = dict(space.resources)
    if opts.cpus_per_trial is not None:
        resources["cpu"] = opts.cpus_per_trial
    if opts.gpus_per_trial is not None:
        resources["gpu"] = opts.gpus_per_trial
    return resources


def check_fits(space: SearchSpace, opts: RunOptions) -> None:
    """On a Ray we started ourselves, a trial asking for more than the machine has would wait forever."""
    have = ray.cluster_resources()
    for kind, ray_name in (("cpu", "CPU"), ("gpu", "GPU")):
        want = trial_resources(space, opts).get(kind, 0)
        if want > have.get(ray_name, 0):
            flag = f"--{kind}s-per-trial"
            raise ConfigError(
                f"{space.path}: RESOURCES asks for {kind}={want:g} per trial but this machine's Ray has "
                f"{have.get(ray_name, 0):g} {ray_name}(s); no trial could start. Fix: pass "
                f"{flag} {0 if kind == 'gpu' else 1} (or edit RESOURCES), or attach to a cluster that "
                "has them with --address."
            )


def _trial_name(trial) -> str:
    """The trial's directory and name: its planned run name (searched trials: a name plus Tune's id)."""
    name = trial.config.get("run_name")
    if name:
        return name
    try:
        return f"{run_name(from_dict(trial.config, check_files=False))}_{trial.trial_id}"
    except Exception:
        return f"trial_{trial.trial_id}"


# ---- one Tune experiment ----------------------------------------------------------------
def _configs(
    space: SearchSpace,
    opts: RunOptions,
    name: str,
    searcher,
    columns: list[str],
    root: str,
    max_concurrent: int | None,
    num_samples: int,
):

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic table honours metric_columns
    tune_config = tune.TuneConfig(
        search_alg=searcher,
        scheduler=instantiate(space, "SCHEDULER"),
        metric=space.metric,
        mode=space.mode,
        num_samples=num_samples,
        max_concurrent_trials=max_concurrent,
        reuse_actors=True,
        trial_name_creator=_trial_name,
        trial_dirname_creator=_trial_name,
    )
    run_config = tune.RunConfig(
        name=name,
        storage_path=storage.parent(root),  # the storage path Tune gets
        verbose=opts.verbose,
        callbacks=_callbacks(opts, space.name, root) or None,
        failure_config=tune.FailureConfig(max_failures=space.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None),  # every epoch stays: forks start from them
        sync_config=tune.SyncConfig(sync_artifacts=True),
        progress_reporter=terminal.reporter(
            root, metric_columns=METRIC_COLUMNS, parameter_columns=columns[:6], max_report_frequency=30
        ),
    )
    return tune_config, run_config


def _study_name(root: str) -> str:
    return (urlsplit(root).path if storage.is_uri(root) else root).rstrip("/").rsplit("/", 1)[-1]


def run_trials(
    planned: list, space: SearchSpace, opts: RunOptions, root: str, record=None, columns: list[str] | None = None
):
    """Run planned trials (:class:`~hba_sweep.sweep.release.Planned`) as one Tune experiment at ``root``,
    skipping what is finished on storage. Returns the searcher (what finished, failed, was skipped) and
    Tune's ResultGrid."""

    finished = {p.name for p in planned if trialfiles.read_done(trialfiles.trial_path(root, p.name)) is not None}
    searcher = StudySearcher(planned, root, finished, record=record)
    max_concurrent = opts.max_concurrent or space.max_concurrent
    tune_config, run_config = _configs(
        space, opts, _study_name(root), searcher, columns or ["run_name"], root, max_concurrent, num_samples=-1
    )
    trainable = _trainable(space, opts, root, finished)
    if record is not None:  # study.json tells a trial Tune started (running) from one it released (queued)
        run_config.callbacks = [*(run_config.callbacks or []), TrialStarts(record)]
    if finished:
        opts.echo(f"{len(finished)} of {len(planned)} trials are finished on storage (not re-run); running the rest")
    # Tune keeps one trial pending at a time for a custom searcher unless a ConcurrencyLimiter says
    # otherwise (TUNE_MAX_PENDING_TRIALS_PG, documented): let every released trial queue for a slot
    saved = os.environ.get(PENDING_ENV)
    if not max_concurrent and saved is None:
        os.environ[PENDING_ENV] = str(max(1, len(planned)))
    try:
        results = tune.Tuner(trainable, param_space={}, tune_config=tune_config, run_config=run_config).fit()
    finally:
        if saved is None:
            os.environ.pop(PENDING_ENV, None)
    return searcher, results


def run_searched(space: SearchSpace, opts: RunOptions, root: str, outcome: StudyOutcome) -> None:
    """A SEARCH_ALG study: the searcher proposes the trials; --resume uses Tune's restore."""
    trainable = _trainable(space, opts, root, set())
    state = _newest_state(root)
    if opts.resume and state is not None and tune.Tuner.can_restore(root):
        opts.echo(f"resuming {storage.redact(root)}")
        try:
            storage.read_json(state)  # else Tune logs the failure and restarts the search (or fails in it)
            tuner = tune.Tuner.restore(root, trainable, resume_errored=True)
        except Exception as exc:
            raise ConfigError(
                f"{storage.redact(state)}: Tune cannot read its saved state ({type(exc).__name__}: "
                f"{exc}). Fix: move that file away and --resume again (Tune then uses the previous "
                "state file, or starts the search again)."
            ) from None
        results = tuner.fit()
    else:
        param_space = {"cache_dir": storage.prefix_cache_dir(root), **space.base, **space.param_space}
        tune_config, run_config = _configs(
            space,
            opts,
            _study_name(root),
            instantiate(space, "SEARCH_ALG"),
            list(space.param_space),
            root,
            opts.max_concurrent or space.max_concurrent,
            space.num_samples,
        )
        results = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config).fit()
    for result in results:
        name = (result.config or {}).get("run_name") or os.path.basename(result.path)
        if result.error:
            outcome.failed.append(name)
        elif trialfiles.read_done(result.path) is not None:
            outcome.ok.append(name)
        else:
            outcome.interrupted.append(name)


def _newest_state(root: str) -> str | None:
    names = [n for n in storage.listdir(root) if n.startswith("experiment_state-") and n.endswith(".json")]
    return storage.join(root, sorted(names)[-1]) if names else None


# ---- planned trials -------------------------------------------------------------------
def independent(trials: list[Trial], root: str) -> list:
    """Trials that need nothing from another (tests, one-off experiments) as searcher entries."""
    return planned_trials(Plan(independent=list(trials)), storage.prefix_cache_dir(root))


def planned_trials(plan: Plan, cache_dir: str, identities: dict[str, Identity] | None = None) -> list:
    """The plan as searcher entries: every config carries its run name, the shared prefix cache and the
    identity the driver planned (the trainable records its own and refuses a mismatch)."""

    def config(t: Trial) -> dict[str, Any]:
        out = {**t.config, "run_name": t.name, "cache_dir": t.config.get("cache_dir") or cache_dir}
        if identities and t.name in identities:
            out[PLANNED_IDENTITY] = planned_identity(identities[t.name])
        return out

    out = [Planned(t.name, config(t)) for t in [*plan.baselines, *plan.independent]]
    out += [Planned(f.trial.name, config(f.trial), f.baseline, f.init_epoch) for f in plan.forks]
    return out


def prepare(space: SearchSpace) -> SearchSpace:
    """Run the file's PREPARE (e.g. generate demo data) and re-read a base YAML it created."""
    if space.prepare is not None:
        space.prepare()
    return reload_base(space)


def _outcome(searcher, planned: list, outcome: StudyOutcome) -> None:
    for p in planned:
        if p.name in searcher.finished:
            outcome.ok.append(p.name)
        elif p.name in searcher.failed:
            outcome.failed.append(p.name)
        elif p.name in searcher.skipped:
            outcome.skipped.append(p.name)
        else:
            outcome.interrupted.append(p.name)


def run_study(space: SearchSpace, opts: RunOptions) -> StudyOutcome:
    """Validate everything, take the study's lock, run it as one Tune experiment; the caller prints the outcome."""
    space = replace(prepare(space), name=opts.name or space.name)  # --name: study.json, W&B group, MLflow experiment
    root = storage.experiment_root(opts.storage, space.name)
    expansion = expand(space, check_files=True)
    if expansion.missing_files:
        raise ConfigError(
            f"{space.path}: data files are missing, nothing was started:\n  "
            + "\n  ".join(expansion.missing_files)
            + f"\nFix: edit the data paths in {space.base_source} (see data/README.md)."
        )
    old = read_manifest(root) if opts.resume else None
    if opts.resume:
        refuse_missing(root, old)
    else:
        refuse_existing(root)
    if storage.is_uri(root):  # before Ray starts: a missing bucket; a file, an unwritable parent, links
        storage.require_bucket(root)
    else:
        safe_paths.check_output_root(root, "--storage")
        safe_paths.refuse_links_below(root)
    plan = None if space.uses_searcher else make_plan(expansion.trials, space.fork_from_baseline)
    identities, matching = ({}, Matching()) if plan is None else match_stored(plan, root, old, opts.resume)
    lock.check_free(root)  # a second driver is refused before Ray starts
    outcome = StudyOutcome(root=root)
    if opts.resume and plan is not None and not matching.extend and all_finished(plan, root):  # nothing to start
        record_nothing_left(root, len(plan_names(plan)))
        outcome.ok.extend(plan_names(plan))
        outcome.nothing_left = True
        return outcome
    with quiet_terminal(log_path(root, space.name)):
        return _run_locked(space, opts, root, expansion, Planning(plan, identities, matching), old, outcome)


def _run_locked(
    space: SearchSpace,
    opts: RunOptions,
    root: str,
    expansion: Expansion,
    planning: Planning,
    old: dict[str, Any] | None,
    outcome: StudyOutcome,
) -> StudyOutcome:
    plan = planning.plan
    started = connect(opts)
    held = None
    try:
        if started:
            check_fits(space, opts)  # before anything is written: a plain re-run must still work
        held = lock.acquire(root)
        kill_point("locked")
        for note in planning.matching.notes:
            opts.echo(note)
        extend_trials(root, planning.matching.extend)
        manifest = Manifest(root, make_manifest(space, plan, root, old, planning.identities, planning.matching.extend))
        manifest.data["runs"].append({**held, "resume": opts.resume})
        manifest.write()
        record = StudyRecord(root, space, plan)
        record.started()
        kill_point("manifest_written")
        if plan is None:
            run_searched(space, opts, root, outcome)
        else:
            planned = planned_trials(plan, storage.prefix_cache_dir(root), planning.identities)
            columns = sorted({k for t in expansion.trials for k in t.varied})
            searcher, _ = run_trials(planned, space, opts, root, record=manifest.record, columns=columns)
            kill_point("fit_returned")
            _outcome(searcher, planned, outcome)
        manifest.data["runs"][-1].update(
            ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            finished=len(outcome.ok),
            failed=len(outcome.failed),
            skipped=len(outcome.skipped),
            interrupted=len(outcome.interrupted),
        )
        manifest.write()
        record.ended(len(outcome.ok), len(outcome.failed), len(outcome.skipped), len(outcome.interrupted))
        kill_point("ended")
    finally:
        if held is not None:
            lock.release(root, held)
        if started:
            ray.shutdown()
    return outcome
