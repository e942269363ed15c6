"""Run a study on Ray Tune: connect, run the phases (baselines, then forks), write the manifest.

Layout of ``<storage>/<NAME>/``: ``study.json`` (the manifest: every planned trial, its phase
and fork source) and one Tune experiment per phase (``baselines/``, ``perturbed/``, or
``trials/`` when nothing forks), each readable with ``ray.tune.ExperimentAnalysis``.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from hba_sweep.errors import ConfigError
from hba_sweep.sweep import storage
from hba_sweep.sweep.expand import Trial, expand
from hba_sweep.sweep.plan import BASELINES, PERTURBED, TRIALS, Plan, make_plan
from hba_sweep.sweep.spec import SearchSpace, instantiate, reload_base

METRIC_COLUMNS = {"epoch": "epoch", "val_loss": "val_loss", "behavioral_rsa_rho": "rsa_rho"}


@dataclass
class RunOptions:
    """Command-line choices for one ``run``."""

    storage: str = "ray_results"
    name: str | None = None
    address: str | None = None
    resume: bool = False
    max_concurrent: int | None = None
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    dashboard: bool = True
    dashboard_host: str = "127.0.0.1"
    wandb_project: str | None = None
    mlflow_uri: str | None = None
    verbose: int = 1
    ray_init: dict[str, Any] = field(default_factory=dict)  # extra ray.init kwargs (tests: num_cpus=2)
    train_fn: Callable | None = None  # tests: a fake training function
    echo: Callable[[str], None] = print


@dataclass
class StudyOutcome:
    root: str
    ok: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)  # not finished when the run was stopped (Ctrl+C)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 0 if not self.failed and not self.skipped else 1


# ---- Ray --------------------------------------------------------------------------------
def connect(opts: RunOptions) -> bool:
    """Start or join Ray (hba_sweep/sweep/cluster.py); True if this call connected."""
    import ray

    from hba_sweep.sweep import cluster

    if ray.is_initialized():
        return False
    address, origin = (opts.address, "--address") if opts.address else (os.environ.get("RAY_ADDRESS"), "RAY_ADDRESS")
    cluster.connect(address, origin, opts.dashboard, opts.dashboard_host, opts.echo, **opts.ray_init)
    return True


def _callbacks(opts: RunOptions, name: str) -> list:
    callbacks = []
    if opts.wandb_project:
        if importlib.util.find_spec("wandb") is None:
            raise ConfigError("--wandb: the wandb package is not installed. Fix: pip install wandb, or drop --wandb.")
        from ray.air.integrations.wandb import WandbLoggerCallback

        callbacks.append(WandbLoggerCallback(project=opts.wandb_project, group=name))
    if opts.mlflow_uri:
        if importlib.util.find_spec("mlflow") is None:
            raise ConfigError("--mlflow: the mlflow package is not installed. Fix: pip install mlflow, or drop --mlflow.")
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        callbacks.append(MLflowLoggerCallback(tracking_uri=opts.mlflow_uri, experiment_name=name))
    return callbacks


def _trainable(space: SearchSpace, opts: RunOptions):
    from ray import tune

    from hba_sweep.perturbations import user_types
    from trainables.hba_trainable import train_hba

    # perturbation types the search-space file registered: workers never execute that file
    fn = tune.with_parameters(train_hba, train_fn=opts.train_fn, perturbations=user_types())
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
    import ray

    have = ray.cluster_resources()
    for kind, ray_name in (("cpu", "CPU"), ("gpu", "GPU")):
        want = trial_resources(space, opts).get(kind, 0)
        if want > have.get(ray_name, 0):
            flag = f"--{kind}s-per-trial"
            raise ConfigError(f"{space.path}: RESOURCES asks for {kind}={want:g} per trial but this machine's Ray has "
                              f"{have.get(ray_name, 0):g} {ray_name}(s); no trial could start. Fix: pass "
                              f"{flag} {0 if kind == 'gpu' else 1} (or edit RESOURCES), or attach to a cluster that "
                              "has them with --address.")


def _trial_name(trial) -> str:
    from hba_sweep.config import from_dict, run_name

    name = trial.config.get("run_name")
    if name:
        return name
    try:
        return f"{run_name(from_dict(trial.config, check_files=False))}_{trial.trial_id}"
    except Exception:
        return f"trial_{trial.trial_id}"


def _grid_space(trials: list[Trial], cache_dir: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A param space plus the exact trial configs (points_to_evaluate) for Tune's variant generator."""
    from ray import tune

    points = [{**t.config, "run_name": t.name, "cache_dir": t.config.get("cache_dir") or cache_dir} for t in trials]
    space: dict[str, Any] = {}
    for key in points[0]:
        values = []
        for p in points:
            if p[key] not in values:
                values.append(p[key])
        space[key] = values[0] if len(values) == 1 else tune.choice(values)
    return space, points


def run_phase(phase: str, trials: list[Trial] | None, space: SearchSpace, opts: RunOptions, root: str):
    """One Tune experiment at ``<root>/<phase>``; restored (no finished trial re-runs) with --resume."""
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    trainable = _trainable(space, opts)
    path = storage.join(root, phase)
    if opts.resume and tune.Tuner.can_restore(path):
        opts.echo(f"resuming {storage.redact(path)}")
        return tune.Tuner.restore(path, trainable, resume_errored=True).fit()
    max_concurrent = opts.max_concurrent or space.max_concurrent
    cache_dir = storage.prefix_cache_dir(root)  # one frozen-prefix cache for every trial of the study
    if trials is None:  # a searcher proposes the trials
        param_space = {"cache_dir": cache_dir, **space.base, **space.param_space}
        search_alg, num_samples = instantiate(space, "SEARCH_ALG"), space.num_samples
        columns = list(space.param_space)
    else:
        param_space, points = _grid_space(trials, cache_dir)
        # Tune ignores max_concurrent_trials for a BasicVariantGenerator: the generator itself limits
        search_alg = BasicVariantGenerator(points_to_evaluate=points, max_concurrent=max_concurrent or 0)
        num_samples, max_concurrent = len(points), None
        columns = sorted({k for t in trials for k in t.varied})
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic table honours metric_columns
    tune_config = tune.TuneConfig(
        search_alg=search_alg, scheduler=instantiate(space, "SCHEDULER"), metric=space.metric, mode=space.mode,
        num_samples=num_samples, max_concurrent_trials=max_concurrent, reuse_actors=True,
        trial_name_creator=_trial_name, trial_dirname_creator=_trial_name)
    run_config = tune.RunConfig(
        name=phase, storage_path=root, verbose=opts.verbose, callbacks=_callbacks(opts, space.name) or None,
        failure_config=tune.FailureConfig(max_failures=space.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        sync_config=tune.SyncConfig(sync_artifacts=True),
        progress_reporter=tune.CLIReporter(metric_columns=METRIC_COLUMNS, parameter_columns=columns[:6],
                                           max_report_frequency=30))
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config).fit()


# ---- the study --------------------------------------------------------------------------
def _sort_results(results, outcome: StudyOutcome) -> dict[str, Any]:
    """Finished results by trial name; trials an interrupt (SIGINT) left pending or running go to
    ``outcome.interrupted`` (Tune returns them without an error, some without a config)."""
    analysis = getattr(results, "_experiment_analysis", None)  # where Tune keeps each trial's status
    unfinished = {t.path for t in getattr(analysis, "trials", []) if t.status not in ("TERMINATED", "ERROR")}
    by_name = {}
    for result in results:
        name = (result.config or {}).get("run_name") or os.path.basename(result.path)
        if result.config is None or result.path in unfinished:
            outcome.interrupted.append(name)
            continue
        by_name[name] = result
        (outcome.failed if result.error else outcome.ok).append(name)
    return by_name


def checkpoint_uri(root: str, phase: str, result, epoch: int) -> str | None:
    """The storage path (or URI) of a finished trial's checkpoint for ``epoch``; None if it has none."""
    for checkpoint, metrics in result.best_checkpoints or []:
        if metrics.get("epoch") == epoch:
            rel = os.path.relpath(checkpoint.path, result.path)
            return storage.join(root, phase, os.path.basename(result.path), *rel.split(os.sep))
    return None


def fork_trials(plan: Plan, baselines: dict[str, Any], root: str, outcome: StudyOutcome,
                manifest: dict[str, Any]) -> list[Trial]:
    """Perturbed trials with init_from/init_epoch set from their baseline's checkpoints."""
    ready = []
    for fork in plan.forks:
        entry = manifest["trials"][fork.trial.name]
        config = dict(fork.trial.config)
        if fork.init_epoch is not None:
            base = baselines.get(fork.baseline)
            if base is None or base.error:
                outcome.skipped.append(fork.trial.name)
                entry["note"] = f"not started: baseline {fork.baseline} failed"
                continue
            uri = checkpoint_uri(root, BASELINES, base, fork.init_epoch)
            if uri is None:  # the baseline stopped early: an unforked run is identical up to its window
                entry["note"] = f"baseline has no epoch {fork.init_epoch} (stopped early): trained from scratch"
            else:
                config.update(init_from=uri, init_epoch=fork.init_epoch)
                entry.update(init_from=storage.redact(uri), init_epoch=fork.init_epoch)
        ready.append(Trial(name=fork.trial.name, config=config, varied=fork.trial.varied))
    return ready


def fork_phases(root: str, resume: bool) -> list[str]:
    """``perturbed``; with --resume also the further fork phases on storage and the next free one."""
    names = [PERTURBED]
    while resume and storage.exists(storage.join(root, names[-1])):
        names.append(f"{PERTURBED}_{len(names) + 1}")
    return names


def run_forks(forks: list[Trial], space: SearchSpace, opts: RunOptions, root: str, outcome: StudyOutcome,
              manifest: dict[str, Any]) -> None:
    """Run the forks. A restored phase only knows the trials it started, so forks an earlier run
    never started (their baseline had failed) run on --resume in a further phase, perturbed_<k>."""
    started: set[str] = set()
    for phase in fork_phases(root, opts.resume):
        todo = [f for f in forks if f.name not in started]
        if not todo or outcome.interrupted:
            return
        if phase not in manifest["phases"]:
            manifest["phases"].append(phase)
            storage.write_json(storage.join(root, storage.MANIFEST), manifest)
        results = run_phase(phase, todo, space, opts, root)
        started |= {(r.config or {}).get("run_name") for r in results}
        _sort_results(results, outcome)


def make_manifest(space: SearchSpace, plan: Plan | None, root: str) -> dict[str, Any]:
    trials: dict[str, Any] = {}
    if plan is not None:
        for t in plan.baselines:
            trials[t.name] = {"phase": BASELINES, "varied": t.varied, "baseline": None}
        for f in plan.forks:
            trials[f.trial.name] = {"phase": PERTURBED, "varied": f.trial.varied, "baseline": f.baseline,
                                    "init_epoch": f.init_epoch, "init_from": None}
        for t in plan.independent:
            trials[t.name] = {"phase": TRIALS, "varied": t.varied, "baseline": None}
    return {"name": space.name, "search_space": str(Path(space.path).resolve()), "root": storage.redact(root),
            "phases": plan.phases if plan else [TRIALS], "fork_from_baseline": bool(plan and plan.forks),
            "metric": space.metric, "mode": space.mode, "evalsets": space.evalsets, "trials": trials}


def prepare(space: SearchSpace) -> SearchSpace:
    """Run the file's PREPARE (e.g. generate demo data) and re-read a base YAML it created."""
    if space.prepare is not None:
        space.prepare()
    return reload_base(space)


def run_study(space: SearchSpace, opts: RunOptions) -> StudyOutcome:
    """Validate everything, then run the study's phases; the caller prints the outcome."""
    space = replace(prepare(space), name=opts.name or space.name)  # --name: study.json, W&B group, MLflow experiment
    root = storage.experiment_root(opts.storage, space.name)
    expansion = expand(space, check_files=True)
    if expansion.missing_files:
        raise ConfigError(f"{space.path}: data files are missing, nothing was started:\n  "
                          + "\n  ".join(expansion.missing_files)
                          + f"\nFix: edit the data paths in {space.base_source} (see data/README.md).")
    manifest_path = storage.join(root, storage.MANIFEST)
    if storage.exists(manifest_path) and not opts.resume:
        raise ConfigError(f"{storage.redact(root)}: this experiment exists already. Fix: add --resume to finish it, "
                          "or give --name NEW (or another --storage) for a new one.")
    plan = None if space.uses_searcher else make_plan(expansion.trials, space.fork_from_baseline)
    manifest = make_manifest(space, plan, root)
    started = connect(opts)
    outcome = StudyOutcome(root=root)
    try:
        if started:
            check_fits(space, opts)  # before anything is written: a plain re-run must still work
        storage.write_json(manifest_path, manifest)
        if plan is None:
            _sort_results(run_phase(TRIALS, None, space, opts, root), outcome)
        elif plan.independent:
            _sort_results(run_phase(TRIALS, plan.independent, space, opts, root), outcome)
        else:
            baselines = _sort_results(run_phase(BASELINES, plan.baselines, space, opts, root), outcome)
            if outcome.interrupted:  # stopped: never fork from unfinished baselines; --resume goes on
                return outcome
            forks = fork_trials(plan, baselines, root, outcome, manifest)
            storage.write_json(manifest_path, manifest)
            run_forks(forks, space, opts, root, outcome, manifest)
    finally:
        if started:
            import ray

            ray.shutdown()
    return outcome
