"""Evaluate a study's checkpoints on its evaluation sets, computing only what is not cached yet.

Results are keyed by checkpoint content (adapter SHA-256 + model layout) and evaluation settings
(dataset, metrics, the SHA-256 of every file read: :mod:`analysis.eval_inputs`): a checkpoint shared by a baseline and its forks' inherited epochs is
evaluated once, and re-running ``analyze`` computes nothing already in ``evaluations.parquet``.
Per model layout the frozen prefix of each image set is computed once (hba_sweep.training.prefix_cache);
each checkpoint then runs only its adapted layers. Work runs in-process, or spread over Ray
tasks with fractional CPU/GPU resources.
"""

from __future__ import annotations

import dataclasses
import hashlib
import posixpath
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray

from analysis import eval_inputs
from analysis.bootstrap import RSA_DATASETS, Resampler, percentile_ci, resampler_for
from analysis.records import Checkpoint, Study
from hba_sweep.artifacts.checkpoint import load_adapters
from hba_sweep.data.evalsets import read_evalsets_yaml
from hba_sweep.foundation.choices import DATASETS
from hba_sweep.foundation.devices import resolve_device
from hba_sweep.foundation.errors import CheckpointError, DataError
from hba_sweep.foundation.io_utils import atomic_write
from hba_sweep.model import ModelSpec
from hba_sweep.training.predict import Predictor
from hba_sweep.training.scoring import EvalSet, ScoreSettings, build_evalset

ROW_KEY_COLUMNS = ["dataset", "reference", "metric"]  # what an evaluation row measures
VALUE_COLUMNS = ["value", "p_value", "ci_low", "ci_high"]  # its value, p-value and confidence interval
EVAL_COLUMNS = ["checkpoint_key", "eval_key", *ROW_KEY_COLUMNS, *VALUE_COLUMNS, "boot"]
# boot: the stimulus-bootstrap draws of an RSA row (analysis.bootstrap), else None
CACHE_FILE = "evaluations.parquet"
# the Fix of a checkpoint whose bytes no longer match the hash gathered (or recorded in its meta.json)
# How to restore a damaged or missing checkpoint (the Fix of a damaged one, in report.md)
RESTORE = (
    "put the file back from a copy, or delete that checkpoint folder and the trial's later ones (and its "
    "done.json), then `python -m hba_sweep run SPACE.py --resume` (one run: `python -m hba_sweep train "
    "--config <run>/config.yaml --resume`) retrains from the last intact epoch; analyze again after (a file "
    "that changed while analyze ran: just analyze again)."
)
ROWS_VERSION = 2  # 2: bootstrap draws on RSA rows, mean SPoSE dimensions on THINGS (older caches recompute)
DIMENSION_METRIC = "mean_prediction"  # THINGS rows: reference = a SPoSE dimension's label, value = its mean


@dataclass
class Options:
    """How the analysis evaluates (command-line choices)."""

    datasets: list[str] | None = None
    evalsets_file: str | None = None
    device: str = "auto"
    batch_size: int = 64
    workers: int = 0  # 0: in this process; N: N Ray tasks
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    score: ScoreSettings = ScoreSettings()


# ---- which evaluation sets --------------------------------------------------------------
def find_evalset_specs(study: Study, evalsets_file: str | None) -> tuple[dict[str, dict[str, Any]], str]:
    """Evaluation-set specs and where they came from: --evalsets, the study manifest, next to the data."""
    if evalsets_file:
        return read_evalsets_yaml(evalsets_file), evalsets_file
    declared = (study.manifest or {}).get("evalsets")
    if isinstance(declared, str):
        if not Path(declared).is_file():
            raise DataError(
                f"{study.root}/study.json: evalsets={declared!r}: no such file. Fix: restore it or give "
                "--evalsets FILE."
            )
        return read_evalsets_yaml(declared), f"{declared} (declared by the study)"
    for candidate in _candidates_near_data(study):
        if candidate.is_file():
            return read_evalsets_yaml(candidate), f"{candidate} (next to the trials' data)"
    return _fallback_specs(study), "the trials' own behavioural set (no evalsets.yaml found)"


def _candidates_near_data(study: Study) -> list[Path]:
    seen: list[Path] = []
    for trial in study.trials.values():
        for key in ("img_annotations_file", "rsa_annotations_file"):
            value = trial.config.get(key)
            if not value:
                continue
            for folder in list(Path(value).parents)[:3]:
                path = folder / "evalsets.yaml"
                if path not in seen:
                    seen.append(path)
    return seen


def _fallback_specs(study: Study) -> dict[str, dict[str, Any]]:
    for trial in study.trials.values():
        c = trial.config
        if c.get("rsa_annotations_file") and c.get("rsa_img_dir") and c.get("behavioral_rdm_file"):
            return {
                "things": {
                    "annotations_file": c["rsa_annotations_file"],
                    "img_dir": c["rsa_img_dir"],
                    "reference_rdms": {"behavior": c["behavioral_rdm_file"]},
                }
            }
    return {}


def select_datasets(specs: dict[str, dict[str, Any]], requested: Sequence[str] | None, source: str) -> list[str]:
    """The datasets to evaluate; DataError for unknown or unconfigured names."""
    available = [d for d in DATASETS if d in specs or (d == "cka" and "things" in specs)]
    if not requested:
        if not available:
            raise DataError(
                f"{source}: no evaluation set is configured. Fix: give --evalsets FILE "
                "(python -m hba_sweep demo-data DIR writes an example)."
            )
        return available
    for name in requested:
        if name not in DATASETS:
            raise DataError(f"--datasets: unknown dataset {name!r}. Fix: use names from {list(DATASETS)}.")
        if name not in available:
            raise DataError(
                f"--datasets: {name!r} is not configured in {source} (it has {available}). "
                "Fix: add it there, give --evalsets FILE, or leave it out."
            )
    return list(dict.fromkeys(requested))


@dataclass
class Evaluation:
    """An evaluation set with its cache key, its stimulus bootstrap (None without draws) and the
    SHA-256 of each file it reads (path -> digest; in the key)."""

    evalset: EvalSet
    key: str
    resampler: Resampler | None
    files: dict[str, str] = dataclasses.field(default_factory=dict)


def build_evaluations(specs: dict[str, dict[str, Any]], names: Sequence[str], score: ScoreSettings) -> list[Evaluation]:
    """The evaluations of ``names``; intervals come from the vectorised draws, not from the scorer's loop."""
    out = []
    for name in names:
        es = build_evalset(name, specs["things" if name == "cka" else name], dataclasses.replace(score, n_boot=0))
        boot = (score.n_boot, score.seed) if name in RSA_DATASETS and score.n_boot > 0 else ()
        files = eval_inputs.file_digests(es)
        key = eval_inputs.content_key(es, files, f"rows{ROWS_VERSION}|boot{boot}")
        resampler = resampler_for(name, es.settings, len(es.paths), score.n_boot, score.seed)
        out.append(Evaluation(es, key, resampler, files))
    return out


# ---- the cache of evaluations -----------------------------------------------------------
def checkpoint_key(ckpt: Checkpoint) -> str:
    """Content key: the adapters' SHA-256 and the model layout they belong to."""
    spec = ModelSpec.from_mapping(ckpt.config)
    return hashlib.sha256(f"{ckpt.adapter_sha256 or ckpt.path}|{spec.key()}".encode()).hexdigest()[:20]


def read_cache(out_dir: Path) -> pd.DataFrame:
    path = out_dir / CACHE_FILE
    if not path.is_file():
        return pd.DataFrame(columns=EVAL_COLUMNS)
    try:
        return pd.read_parquet(path)
    except Exception:  # noqa: BLE001 - a corrupt cache is recomputed, not fatal
        return pd.DataFrame(columns=EVAL_COLUMNS)


DAMAGED = "damaged"  # the key of a row that says a checkpoint could not be read (its message), not cached


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    atomic_write(path, lambda fh: frame.to_parquet(fh, index=False))


def pending(
    study: Study, evaluations: Sequence[Evaluation], cache: pd.DataFrame
) -> dict[str, tuple[Checkpoint, list[str]]]:
    """Checkpoints (by key) with the evaluation keys still missing for each."""
    done = set(zip(cache["checkpoint_key"], cache["eval_key"], strict=False))
    keys = [ev.key for ev in evaluations]
    todo: dict[str, tuple[Checkpoint, list[str]]] = {}
    for entry in study.entries:
        ck = checkpoint_key(entry.checkpoint)
        missing = [k for k in keys if (ck, k) not in done]
        if missing and ck not in todo:
            todo[ck] = (entry.checkpoint, missing)
    return todo


# ---- computing --------------------------------------------------------------------------
def score_or_nan(es: EvalSet, predictions: np.ndarray) -> list[dict[str, Any]]:
    """The evaluation set's rows; NaN values (same references and metrics) when the predictions are not
    finite (a diverged checkpoint): the labels come from scoring a fixed finite stand-in."""
    if np.all(np.isfinite(predictions)):
        return es.score(predictions)
    stand_in = np.random.default_rng(0).normal(size=predictions.shape)
    nan = float("nan")
    return [{**r, "value": nan, "p_value": nan, "ci_low": nan, "ci_high": nan} for r in es.score(stand_in)]


def evaluation_rows(ev: Evaluation, predictions: np.ndarray) -> list[dict[str, Any]]:
    """The scorer's rows, each RSA row with its bootstrap draws and percentile CI; on THINGS also the
    mean predicted value of every SPoSE dimension (the 66 labels of the model's prompts)."""
    finite = bool(np.all(np.isfinite(predictions)))
    rows = score_or_nan(ev.evalset, predictions)
    draws = ev.resampler.draws(predictions) if ev.resampler is not None and finite else {}
    for row in rows:
        if row["reference"] in draws and row["metric"].startswith("rsa_"):
            row["boot"] = draws[row["reference"]].astype(np.float64).tolist()
            row["ci_low"], row["ci_high"] = percentile_ci(draws[row["reference"]])
    if ev.evalset.dataset == "things":
        from hba_sweep.model import load_prompts

        means = predictions.mean(axis=0) if finite else np.full(predictions.shape[1], np.nan)
        rows += [
            {
                "reference": label,
                "metric": DIMENSION_METRIC,
                "value": float(v),
                "p_value": float("nan"),
                "ci_low": float("nan"),
                "ci_high": float("nan"),
            }
            for label, v in zip(load_prompts(), means, strict=False)
        ]
    return rows


def evaluate_checkpoints(
    fs: Any,
    work: list[tuple[str, Checkpoint, list[str]]],
    evaluations: Sequence[Evaluation],
    device: str,
    cache_root: str,
    batch_size: int,
    progress: Callable[[Checkpoint], None] | None = None,
) -> list[dict[str, Any]]:
    """Rows for ``work`` (checkpoint key, checkpoint, eval keys); one model per layout, prefix once per set;
    ``progress(checkpoint)`` after each."""
    by_key = {ev.key: ev for ev in evaluations}
    predictor: Predictor | None = None  # one model in memory at a time (work is sorted by layout)
    rows = []
    for ck, ckpt, eval_keys in work:
        spec = ModelSpec.from_mapping(ckpt.config)
        if predictor is None or predictor.spec != spec:
            predictor = None
            predictor = Predictor(spec, resolve_device(device), cache_root, batch_size)
        try:
            adapters = load_adapters(ckpt.path, verify=False, fs=fs, expected=ckpt.adapter_sha256 or None, fix=RESTORE)
        except CheckpointError as exc:  # damage is contained: listed in the report, the other checkpoints go on
            rows.append({"checkpoint_key": ck, DAMAGED: str(exc)})
            if progress is not None:
                progress(ckpt)
            continue
        predictor.load(adapters, posixpath.join(ckpt.path, "adapter"))
        for key in eval_keys:
            ev = by_key[key]
            rows += [
                {"checkpoint_key": ck, "eval_key": key, "dataset": ev.evalset.dataset, **r}
                for r in evaluation_rows(ev, predictor.predict(ev.evalset.paths))
            ]
        if progress is not None:
            progress(ckpt)
    return rows


def _by_layout(todo: dict[str, tuple[Checkpoint, list[str]]]) -> list[tuple[str, Checkpoint, list[str]]]:
    work = [(ck, c, keys) for ck, (c, keys) in todo.items()]
    return sorted(work, key=lambda w: (ModelSpec.from_mapping(w[1].config).key(), w[1].path))


def run_pending(
    study: Study,
    todo: dict[str, tuple[Checkpoint, list[str]]],
    evalsets: Sequence[Evaluation],
    opts: Options,
    out_dir: Path,
    save: Callable[[list[dict[str, Any]]], None],
    log: Callable[[str], None] = lambda m: None,
) -> int:
    """Compute the pending evaluations (in process or as Ray tasks); ``save`` is called per chunk,
    ``log`` with a line per checkpoint done."""
    work = _by_layout(todo)
    if not work:
        return 0
    cache_root = str(out_dir / "prefix_cache")
    done = [0]
    start_time = time.perf_counter()

    def progress(ckpt: Checkpoint, n: int = 1) -> None:
        done[0] += n
        log(
            f"[{done[0]}/{len(work)}] {posixpath.relpath(ckpt.path, study.root)} (epoch {ckpt.epoch}), "
            f"{time.perf_counter() - start_time:.1f} s"
        )

    if opts.workers and opts.workers > 0:
        return _run_ray(study, work, evalsets, opts, cache_root, save, progress)
    chunk = 16
    for start in range(0, len(work), chunk):
        save(
            evaluate_checkpoints(
                study.filesystem,
                work[start : start + chunk],
                evalsets,
                opts.device,
                cache_root,
                opts.batch_size,
                progress,
            )
        )
    return len(work)


def _run_ray(
    study: Study,
    work: list,
    evalsets: Sequence[Evaluation],
    opts: Options,
    cache_root: str,
    save: Callable[[list[dict[str, Any]]], None],
    progress: Callable[..., None],
) -> int:
    """Split the work into ``workers`` contiguous chunks (layout-sorted), one Ray task each."""
    started = not ray.is_initialized()
    if started:
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        task = ray.remote(num_cpus=opts.cpus_per_worker, num_gpus=opts.gpus_per_worker)(evaluate_checkpoints)
        size = -(-len(work) // opts.workers)
        device = "cuda" if opts.gpus_per_worker > 0 else ("cpu" if opts.device == "auto" else opts.device)
        chunks = {
            task.remote(
                study.filesystem, work[i : i + size], list(evalsets), device, cache_root, opts.batch_size
            ): work[i : i + size]
            for i in range(0, len(work), size)
        }
        refs = list(chunks)
        while refs:
            ready, refs = ray.wait(refs, num_returns=1)
            save(ray.get(ready[0]))
            part = chunks[ready[0]]
            progress(part[-1][1], len(part))
    finally:
        if started:
            ray.shutdown()
    return len(work)
