"""Analyse a whole study (``python -m hba_sweep analyze <experiment>``, :mod:`hba_sweep.cli.analyze`):
tables, figures and a report.

Everything the user can get wrong (experiment dir, --datasets, evaluation sets, their files) is
checked before anything is written; outputs are written atomically, so a failed run leaves the
previous results untouched.
"""

from __future__ import annotations

import io
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import (
    bootstrap,
    definitions,
    dimensions,
    eval_inputs,
    evaluate,
    figures,
    gather,
    groups,
    report,
    statistics,
    tables,
)
from analysis.best_trial import best_trial
from analysis.identity_report import identity_lines
from analysis.records import Study
from hba_sweep.foundation import storage as store
from hba_sweep.foundation.errors import ConfigError, DataError
from hba_sweep.foundation.io_utils import atomic_write_text
from hba_sweep.foundation.safe_paths import ensure_inside, writes_inside


@dataclass
class Summary:
    """What one ``analyze`` did."""

    out_dir: Path
    computed: int
    results: pd.DataFrame
    training: pd.DataFrame
    summary: pd.DataFrame = field(default_factory=pd.DataFrame)
    figures: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def sync(fs, src: str, dst: str, names: list[str], download: bool) -> None:
    """Copy the named output files between the experiment's storage and a local folder."""
    where = f"{fs.type_name}://{src if download else dst}"  # for the message: an unreachable store, a full disk
    with store.reaching(where, "download the analysis cache" if download else "upload the analysis"):
        store.copy_files(src, dst, names, fs if download else None, None if download else fs)


def recorded_rows(fs, trial_dir: str) -> list[dict[str, Any]]:
    """The rows of a run's metrics.csv (a trial's ``run/metrics.csv``): the epochs it trained, whichever
    checkpoints are still there; none when there is no readable file."""
    for path in (f"{trial_dir}/metrics.csv", f"{trial_dir}/run/metrics.csv"):
        try:
            return pd.read_csv(io.StringIO(store.read_text(path, fs))).to_dict("records")
        except (OSError, ValueError, KeyError):
            continue
    return []


def damage_notes(study: Study, damaged: list[str]) -> list[str]:
    """The report's lines for checkpoints that could not be read (the message names the file and why) and
    for epochs a trial's metrics record whose checkpoint is gone, each with how to restore it."""
    notes = [f"damaged, left out: {message}" for message in damaged]  # the message says how to restore it
    for trial in study.trials.values():
        if any(c.path.endswith(".pth") for c in trial.checkpoints.values()):
            continue  # a published run folder: its trainer may keep only some epochs' dora_params
        rows = trial.history + recorded_rows(study.filesystem, trial.directory)
        recorded = {
            int(r["epoch"])
            for r in rows
            if str(r.get("inherited")) not in ("True", "true", "1")
            and isinstance(r.get("epoch"), (int, float))
            and r["epoch"] == r["epoch"]
            and r["epoch"] >= 0
        }
        for epoch in sorted(recorded - set(trial.checkpoints)):
            notes.append(
                f"missing, left out: {trial.label} [{trial.trial_id}] epoch {epoch}: its metrics record the "
                f"epoch but {trial.directory} holds no checkpoint of it. Restore: {evaluate.RESTORE}"
            )
    return notes


def _naming(log: Callable[[str], None], temporary: str, shown: str) -> Callable[[str], None]:
    """``log`` with the local working folder (deleted at the end) named as where the results go."""
    return lambda message: log(str(message).replace(temporary, shown))


def plan_line(study: Study, todo: dict) -> str:
    """What analyze will evaluate and why the rest is not evaluated again."""
    keys = [evaluate.checkpoint_key(e.checkpoint) for e in study.entries]
    inherited = sum(e.inherited for e in study.entries)
    cached = len({k for k in keys if k not in todo})
    repeats = len(keys) - inherited - len(set(keys))
    return (
        f"{len(todo)} of {len(study.entries)} (trial, epoch) checkpoints to evaluate: {inherited} are inherited "
        f"from baselines (evaluated once, with the baseline), {cached} distinct checkpoint(s) are already in "
        f"{evaluate.CACHE_FILE}" + (f", {repeats} repeat another's adapters" if repeats > 0 else "")
    )


def analyze(
    experiment: str,
    opts: evaluate.Options | None = None,
    out: str | None = None,
    csv: bool = False,
    storage: str | None = None,
    log=print,
    truncate: str = "min_val_loss",
    test: str = "t",
    alpha: float = 0.05,
    per_seed_heatmaps: bool = False,
    pool_studies: bool = False,
) -> Summary:
    """Analyse every checkpoint of a study; compute only evaluations not in the cache yet.

    ``test``: the test over seeds whose p is BH-corrected (``t`` or ``sign_flip``); ``alpha``: the
    q level a window must reach to be called significant; ``per_seed_heatmaps``: also one heatmap per seed;
    ``pool_studies``: analyse the trials of several studies under ``experiment`` together (else refused)."""
    started = time.perf_counter()
    opts = opts or evaluate.Options()
    if truncate not in definitions.TRUNCATE_RULES:
        raise ConfigError(f"--truncate {truncate!r}: unknown rule. Fix: use one of {list(definitions.TRUNCATE_RULES)}.")
    if test not in statistics.TESTS or not 0.0 < alpha < 1.0:
        raise ConfigError(
            f"--test {test!r} / --q {alpha!r}: the test must be one of {list(statistics.TESTS)} and q "
            "in (0, 1). Fix: e.g. --test t --q 0.05."
        )
    fs, root = gather.open_experiment(experiment, storage)
    study = gather.gather(fs, root, pool_studies, store.redact(store.experiment_path(experiment, storage)))
    if not study.entries:
        raise DataError(
            f"{experiment}: no checkpoint (meta.json) found. Fix: point at a study's experiment "
            "directory, e.g. ray_results/<name>, after at least one epoch has finished."
        )
    specs, source = evaluate.find_evalset_specs(study, opts.evalsets_file)
    names = evaluate.select_datasets(specs, opts.datasets, source)
    evalsets = evaluate.build_evaluations(specs, names, opts.score)  # loads every file: errors before any write
    remote = f"{root.rstrip('/')}/analysis" if not store.is_local(fs) and not out else None
    out_dir = (
        Path(out) if out else (Path(tempfile.mkdtemp(prefix="hba_analysis_")) if remote else Path(root) / "analysis")
    )
    inside = out_dir if out or remote else Path(root)  # writes stay there, never through a link below it
    shown = None  # where the results go, as the user named the storage (remote studies)
    if remote:
        shown = store.redact(store.join(store.experiment_path(experiment, storage), "analysis"))  # the URI as given
        log = _naming(log, str(out_dir), shown)
    with writes_inside(inside):
        ensure_inside(out_dir / "prefix_cache", inside, "--out")
        return _analyze(
            study,
            evalsets,
            names,
            source,
            opts,
            out_dir,
            remote,
            fs,
            csv,
            log,
            started,
            {"truncate": truncate, "test": test, "alpha": alpha, "per_seed": per_seed_heatmaps},
            shown,
        )


def _analyze(
    study: Study,
    evalsets,
    names,
    source,
    opts,
    out_dir: Path,
    remote: str | None,
    fs,
    csv: bool,
    log,
    started: float,
    choices: dict[str, Any],
    shown: str | None,
) -> Summary:
    if remote:  # work in a local folder, then upload to <experiment>/analysis
        sync(fs, remote, str(out_dir), [evaluate.CACHE_FILE, eval_inputs.RECORD_FILE], download=True)
    cache = evaluate.read_cache(out_dir)
    todo = evaluate.pending(study, evalsets, cache)
    log(f"{len(study.trials)} trials; datasets {', '.join(names)}")
    for line in eval_inputs.changed_lines(out_dir, evalsets, set(cache["eval_key"])):
        log(line)
    log(plan_line(study, todo))
    state = {"cache": cache}
    choices["damaged"] = []

    def save(rows: list[dict[str, Any]]) -> None:
        choices["damaged"] += [r[evaluate.DAMAGED] for r in rows if evaluate.DAMAGED in r]
        rows = [r for r in rows if evaluate.DAMAGED not in r]
        state["cache"] = pd.concat(
            [state["cache"], pd.DataFrame(rows, columns=evaluate.EVAL_COLUMNS)], ignore_index=True
        ).drop_duplicates(["checkpoint_key", "eval_key", "reference", "metric"], keep="last")
        evaluate.write_parquet(out_dir / evaluate.CACHE_FILE, state["cache"])

    if todo:
        out_dir.mkdir(parents=True, exist_ok=True)
    computed = evaluate.run_pending(study, todo, evalsets, opts, out_dir, save, log)
    eval_inputs.write_record(out_dir, evalsets)
    summary = _write_outputs(study, state["cache"], evalsets, names, source, opts, out_dir, csv, computed, log, choices)
    if remote:
        files = sorted(p.name for p in out_dir.iterdir() if p.is_file())
        sync(fs, str(out_dir), remote, files, download=False)
        shutil.rmtree(out_dir, ignore_errors=True)
        summary.out_dir = Path(remote)
        log(f"uploaded {len(files)} files to {shown}")
    log(f"analyze took {time.perf_counter() - started:.1f} s; results in {shown or summary.out_dir}")
    return summary


def _write_outputs(
    study: Study,
    cache: pd.DataFrame,
    evalsets,
    names,
    source,
    opts,
    out_dir: Path,
    csv: bool,
    computed: int,
    log,
    choices: dict[str, Any],
) -> Summary:
    truncate = choices["truncate"]
    keys = [ev.key for ev in evalsets]
    results = tables.results_table(study, cache, keys)
    draws = bootstrap.draws_of(results, cache)
    results = bootstrap.add_delta_intervals(results, draws)
    training = tables.training_table(study)
    per_epoch = tables.per_epoch_measures(results, training)
    group_keys, group_table = groups.group_settings(study)
    by = [*definitions.WINDOW, *group_keys]
    summary = groups.with_groups(tables.summary_table(results, training, truncate, per_epoch), group_keys, group_table)
    stats = statistics.window_statistics(
        summary,
        bootstrap.summary_draws(summary, results, draws),
        choices["test"],
        choices["alpha"],
        opts.score.seed,
        by,
    )
    summary = statistics.with_window_statistics(summary, stats, by)
    deltas = dimensions.dimension_deltas(study, cache, keys, tables.settings_table(study))
    dims = dimensions.window_dimensions(groups.with_groups(deltas, group_keys, group_table), group_keys)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = {
        "results": results,
        "training_metrics": training,
        "summary": summary,
        "windows": stats,
        "dimensions": dims,
    }
    for name, frame in outputs.items():
        evaluate.write_parquet(out_dir / f"{name}.parquet", frame)
        if csv:
            atomic_write_text(out_dir / f"{name}.csv", frame.to_csv(index=False))
    paths, notes = figures.draw_all(
        per_epoch,
        training,
        summary,
        out_dir,
        truncate,
        stats,
        choices["per_seed"],
        dims if len(dims) else None,
        group_keys,
    )
    best, metric, mode = best_trial(study, training)
    skipped = (
        list(study.skipped)
        + damage_notes(study, choices["damaged"])
        + [
            f"{t.label} [{t.trial_id}]: {t.status}" + (f" ({t.note})" if t.note else "")
            for t in study.trials.values()
            if t.status and t.status != "done"
        ]
    )
    info = {
        "root": study.root,
        "n_trials": len(study.trials),
        "n_baselines": sum(t.is_baseline for t in study.trials.values()),
        "n_entries": len(study.entries),
        "n_inherited": sum(e.inherited for e in study.entries),
        "n_unique": len({evaluate.checkpoint_key(e.checkpoint) for e in study.entries}),
        "datasets": names,
        "evalsets_source": source,
        "score": opts.score,
        "computed": computed,
        "skipped": skipped,
        **choices,
        "best": best,
        "metric": metric,
        "mode": mode,
        "diverged": tables.diverged_trials(training, results),
        "n_results": len(results),
        "groups": group_keys,
        "identity": identity_lines(study, group_keys),
        "duplicates": study.duplicates,
        "n_training": len(training),
    }
    atomic_write_text(out_dir / "report.md", report.write_report(info, summary, paths, notes, stats))
    log(
        f"computed {computed} checkpoint(s); {len(results)} result rows, {len(summary)} perturbed trials in "
        f"summary.parquet -> {out_dir}: report.md, {len(paths)} figures"
    )
    return Summary(out_dir, computed, results, training, summary, paths, skipped + notes)
