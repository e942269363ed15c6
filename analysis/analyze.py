"""Analyse a whole study (``python -m hba_sweep analyze <experiment>``, :mod:`hba_sweep.cli.analyze`):
tables, figures and a report.

Everything the user can get wrong (experiment dir, --datasets, evaluation sets, their files) is
checked before anything is written; outputs are written atomically, so a failed run leaves the
previous results untouched.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pyarrow.fs as pafs

from analysis import bootstrap, definitions, dimensions, evaluate, figures, gather, report, statistics, tables
from analysis.best_trial import best_trial
from analysis.records import Study
from hba_sweep.foundation.errors import ConfigError, DataError
from hba_sweep.foundation.io_utils import atomic_write_text
from hba_sweep.foundation.storage import experiment_path, join, reaching, redact


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


def is_remote(fs) -> bool:
    return not isinstance(fs, pafs.LocalFileSystem)


def sync(fs, src: str, dst: str, names: list[str], download: bool) -> None:
    """Copy the named output files between the experiment's storage and a local folder."""
    local = pafs.LocalFileSystem()
    where = f"{fs.type_name}://{src if download else dst}"  # for the message: an unreachable store, a full disk
    with reaching(where, "download the analysis cache" if download else "upload the analysis"):
        (local if download else fs).create_dir(dst, recursive=True)
        for name in names:
            source, target = (f"{src}/{name}", f"{dst}/{name}")
            source_fs, target_fs = (fs, local) if download else (local, fs)
            if source_fs.get_file_info(source).type == pafs.FileType.File:
                pafs.copy_files(source, target, source_filesystem=source_fs, destination_filesystem=target_fs)


def _naming(log: Callable[[str], None], temporary: str, shown: str) -> Callable[[str], None]:
    """``log`` with the local working folder (deleted at the end) named as where the results go."""
    return lambda message: log(str(message).replace(temporary, shown))


def plan_line(study: Study, todo: dict) -> str:
    """What analyze will evaluate and why the rest is not evaluated again."""
    keys = [evaluate.checkpoint_key(e.checkpoint) for e in study.entries]
    inherited = sum(e.inherited for e in study.entries)
    cached = len({k for k in keys if k not in todo})
    repeats = len(keys) - inherited - len(set(keys))
    return (f"{len(todo)} of {len(study.entries)} (trial, epoch) checkpoints to evaluate: {inherited} are inherited "
            f"from baselines (evaluated once, with the baseline), {cached} distinct checkpoint(s) are already in "
            f"{evaluate.CACHE_FILE}" + (f", {repeats} repeat another's adapters" if repeats > 0 else ""))


def analyze(experiment: str, opts: evaluate.Options | None = None, out: str | None = None, csv: bool = False,
            storage: str | None = None, log=print, truncate: str = "min_val_loss", test: str = "t",
            alpha: float = 0.05, per_seed_heatmaps: bool = False) -> Summary:
    """Analyse every checkpoint of a study; compute only evaluations not in the cache yet.

    ``test``: the test over seeds whose p is BH-corrected (``t`` or ``sign_flip``); ``alpha``: the
    q level a window must reach to be called significant; ``per_seed_heatmaps``: also one heatmap per seed."""
    started = time.perf_counter()
    opts = opts or evaluate.Options()
    if truncate not in definitions.TRUNCATE_RULES:
        raise ConfigError(f"--truncate {truncate!r}: unknown rule. Fix: use one of {list(definitions.TRUNCATE_RULES)}.")
    if test not in statistics.TESTS or not 0.0 < alpha < 1.0:
        raise ConfigError(f"--test {test!r} / --q {alpha!r}: the test must be one of {list(statistics.TESTS)} and q "
                          "in (0, 1). Fix: e.g. --test t --q 0.05.")
    fs, root = gather.open_experiment(experiment, storage)
    study = gather.gather(fs, root)
    if not study.entries:
        raise DataError(f"{experiment}: no checkpoint (meta.json) found. Fix: point at a study's experiment "
                        "directory, e.g. ray_results/<name>, after at least one epoch has finished.")
    specs, source = evaluate.find_evalset_specs(study, opts.evalsets_file)
    names = evaluate.select_datasets(specs, opts.datasets, source)
    evalsets = evaluate.build_evaluations(specs, names, opts.score)  # loads every file: errors before any write
    remote = f"{root.rstrip('/')}/analysis" if is_remote(fs) and not out else None
    out_dir = Path(out) if out else (Path(tempfile.mkdtemp(prefix="hba_analysis_")) if remote else Path(root) / "analysis")
    shown = None  # where the results go, as the user named the storage (remote studies)
    if remote:  # work in a local folder, then upload to <experiment>/analysis
        sync(fs, remote, str(out_dir), [evaluate.CACHE_FILE], download=True)
        shown = redact(join(experiment_path(experiment, storage), "analysis"))  # the URI, as the user gave it
        log = _naming(log, str(out_dir), shown)
    cache = evaluate.read_cache(out_dir)
    todo = evaluate.pending(study, evalsets, cache)
    log(f"{len(study.trials)} trials; datasets {', '.join(names)}")
    log(plan_line(study, todo))
    state = {"cache": cache}

    def save(rows: list[dict[str, Any]]) -> None:
        state["cache"] = pd.concat([state["cache"], pd.DataFrame(rows, columns=evaluate.EVAL_COLUMNS)],
                                   ignore_index=True).drop_duplicates(
            ["checkpoint_key", "eval_key", "reference", "metric"], keep="last")
        evaluate.write_parquet(out_dir / evaluate.CACHE_FILE, state["cache"])

    if todo:
        out_dir.mkdir(parents=True, exist_ok=True)
    computed = evaluate.run_pending(study, todo, evalsets, opts, out_dir, save, log)
    summary = _write_outputs(study, state["cache"], evalsets, names, source, opts, out_dir, csv, computed, log,
                             {"truncate": truncate, "test": test, "alpha": alpha, "per_seed": per_seed_heatmaps})
    if remote:
        files = sorted(p.name for p in out_dir.iterdir() if p.is_file())
        sync(fs, str(out_dir), remote, files, download=False)
        shutil.rmtree(out_dir, ignore_errors=True)
        summary.out_dir = Path(remote)
        log(f"uploaded {len(files)} files to {shown}")
    log(f"analyze took {time.perf_counter() - started:.1f} s; results in {shown or summary.out_dir}")
    return summary


def _write_outputs(study: Study, cache: pd.DataFrame, evalsets, names, source, opts, out_dir: Path,
                   csv: bool, computed: int, log, choices: dict[str, Any]) -> Summary:
    truncate = choices["truncate"]
    keys = [ev.key for ev in evalsets]
    results = tables.results_table(study, cache, keys)
    draws = bootstrap.draws_of(results, cache)
    results = bootstrap.add_delta_intervals(results, draws)
    training = tables.training_table(study)
    per_epoch = tables.per_epoch_measures(results, training)
    summary = tables.summary_table(results, training, truncate, per_epoch)
    stats = statistics.window_statistics(summary, bootstrap.summary_draws(summary, results, draws), choices["test"],
                                         choices["alpha"], opts.score.seed)
    summary = statistics.with_window_statistics(summary, stats)
    dims = dimensions.window_dimensions(dimensions.dimension_deltas(study, cache, keys, tables.settings_table(study)))
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = {"results": results, "training_metrics": training, "summary": summary, "windows": stats,
               "dimensions": dims}
    for name, frame in outputs.items():
        evaluate.write_parquet(out_dir / f"{name}.parquet", frame)
        if csv:
            atomic_write_text(out_dir / f"{name}.csv", frame.to_csv(index=False))
    paths, notes = figures.draw_all(per_epoch, training, summary, out_dir, truncate, stats, choices["per_seed"],
                                    dims if len(dims) else None)
    best, metric, mode = best_trial(study, training)
    skipped = list(study.skipped) + [f"{t.label} [{t.trial_id}]: {t.status}" + (f" ({t.note})" if t.note else "")
                                     for t in study.trials.values() if t.status and t.status != "done"]
    info = {"root": study.root, "n_trials": len(study.trials),
            "n_baselines": sum(t.is_baseline for t in study.trials.values()), "n_entries": len(study.entries),
            "n_inherited": sum(e.inherited for e in study.entries),
            "n_unique": len({evaluate.checkpoint_key(e.checkpoint) for e in study.entries}),
            "datasets": names, "evalsets_source": source, "score": opts.score, "computed": computed,
            "skipped": skipped, **choices, "best": best, "metric": metric, "mode": mode,
            "diverged": tables.diverged_trials(training, results), "n_results": len(results), "n_training": len(training)}
    atomic_write_text(out_dir / "report.md", report.write_report(info, summary, paths, notes, stats))
    log(f"computed {computed} checkpoint(s); {len(results)} result rows, {len(summary)} perturbed trials in "
        f"summary.parquet -> {out_dir}: report.md, {len(paths)} figures")
    return Summary(out_dir, computed, results, training, summary, paths, skipped + notes)
