"""``analyze EXPERIMENT``: the command's options turned into :class:`analysis.evaluate.Options`,
then :func:`analysis.analyze.analyze`."""

from __future__ import annotations

import argparse
import sys

from analysis import evaluate
from analysis.analyze import analyze
from hba_sweep.foundation.choices import DATASETS
from hba_sweep.foundation.errors import ConfigError, DataError
from hba_sweep.foundation.redaction import redact_text
from hba_sweep.training.scoring import ScoreSettings


def _datasets(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise DataError(f"--datasets {value!r}: empty. Fix: give names from {list(DATASETS)}, comma-separated.")
    return names


def options_from_args(args: argparse.Namespace) -> evaluate.Options:
    if args.workers < 0 or args.batch_size < 1 or args.bootstrap < 0:
        raise ConfigError("--workers and --bootstrap must be >= 0 and --batch-size >= 1. Fix: correct the value.")
    score = ScoreSettings(args.model_rdm_distance, args.rsa_similarity, "pearson", args.bootstrap, args.seed)
    workers = 0 if args.local else args.workers
    return evaluate.Options(
        _datasets(args.datasets),
        args.evalsets,
        args.device,
        args.batch_size,
        workers,
        args.cpus_per_worker,
        args.gpus_per_worker,
        score,
    )


def analyze_command(args: argparse.Namespace) -> int:
    """`analyze`: evaluate, tabulate and draw a study."""
    opts = options_from_args(args)
    analyze(
        args.experiment,
        opts,
        args.out,
        args.csv,
        args.storage,
        log=lambda m: print(redact_text(m), file=sys.stderr, flush=True),
        truncate=args.truncate,
        test=args.test,
        alpha=args.q,
        per_seed_heatmaps=args.per_seed_heatmaps,
        pool_studies=args.pool_studies,
    )
    return 0
