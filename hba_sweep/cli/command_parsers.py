"""Parsers of ``demo-data``, ``infer`` and ``analyze``, kept apart from their modules (which
import torch, pandas or matplotlib) so that --help and argument errors answer at once; each
handler imports its module when the command runs."""

from __future__ import annotations

import argparse
from typing import Any

from hba_sweep.cli.arguments import add_command, add_overrides
from hba_sweep.foundation.choices import DATASETS, DISTANCE_METRICS, SIMILARITY_METRICS, STAT_TESTS, TRUNCATE_RULES


def _demo_data(args: argparse.Namespace) -> int:
    from hba_sweep.cli.demo_data import demo_data_command  # reason: pandas, torch load when it runs, not for --help

    return demo_data_command(args)


def _infer(args: argparse.Namespace) -> int:
    from hba_sweep.cli.infer import infer_command  # reason: torch loads when infer runs, not for --help

    return infer_command(args)


def _analyze(args: argparse.Namespace) -> int:
    from hba_sweep.cli.analyze import analyze_command  # reason: pandas, torch, matplotlib load when analyze runs

    return analyze_command(args)


def add_demo_data_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``demo-data DIR [--n-train N] [--seed S] [--image-size S] [--force]``."""
    parser = add_command(
        subparsers,
        "demo-data",
        _demo_data,
        "Generate (or reuse) deterministic demo data: THINGS-format training and 48-image "
        "evaluation sets with a reference RDM, THINGS-fMRI, NOD and NIGHTS evaluation sets, "
        "evalsets.yaml and ready train.yaml and infer.yaml.",
    )
    parser.add_argument("dir", help="output directory (created; reused if it holds the same demo data)")
    parser.add_argument("--n-train", type=int, default=480, help="training images (default 480)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument("--image-size", type=int, default=64, help="image side in pixels (default 64, hba-tiny)")
    parser.add_argument("--backbone", default="hba-tiny", help="backbone written to train.yaml (default hba-tiny)")
    parser.add_argument("--force", action="store_true", help="regenerate even if DIR holds demo data")
    return parser


def add_infer_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``infer --config X.yaml``."""
    p = add_command(
        subparsers,
        "infer",
        _infer,
        "Evaluate checkpoints (model_weights_path + epoch) on one evaluation set "
        "(evaluation_type behavioral|neural|triplet|cka) and write one JSON per epoch "
        "to inference_save_dir.",
    )
    p.add_argument("--config", required=True, help="inference YAML (the study's keys)")
    p.add_argument("--device", default=None, help="override the device (cpu, cuda, cuda:N, auto)")
    add_overrides(p, "override a key of the inference YAML (repeatable)")
    return p


def add_analyze_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``analyze``."""
    p = add_command(
        subparsers,
        "analyze",
        _analyze,
        "Gather a study's trials and epoch checkpoints, evaluate them on the study's evaluation sets "
        "(only what is not analysed yet), and write results.parquet, training_metrics.parquet, "
        "figures and report.md to <experiment>/analysis (or --out).",
    )
    p.add_argument("experiment", help="experiment directory (ray_results/<name>), a run directory, or a URI")
    p.add_argument("--datasets", help=f"comma-separated subset of {','.join(DATASETS)} (default: all configured)")
    p.add_argument("--out", help="local output directory (default: <experiment>/analysis, uploaded there for a URI)")
    p.add_argument("--csv", action="store_true", help="also write the tables as CSV")
    p.add_argument("--storage", help="storage path or URI holding the experiment (then EXPERIMENT is its name)")
    p.add_argument("--evalsets", help="evaluation-set YAML (default: the study's, or evalsets.yaml next to the data)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0, help="spread the work over N Ray tasks (default 0: in process)")
    p.add_argument("--local", action="store_true", help="run in this process (same as --workers 0)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="Ray resources of each task")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="Ray GPUs of each task (fractions allowed)")
    p.add_argument(
        "--bootstrap",
        type=int,
        default=200,
        help="stimulus-bootstrap draws: a CI for every RSA value, a paired CI and p for every change "
        "against the baseline, and the test of a one-seed window (default 200; 0: none)",
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap and permutation seed")
    p.add_argument(
        "--test",
        default="t",
        choices=STAT_TESTS,
        help="test of a window's deviation over seeds: one-sample t (default) or sign-flip permutation",
    )
    p.add_argument(
        "--q",
        type=float,
        default=0.05,
        help="Benjamini-Hochberg level at which a window is called significant (default 0.05)",
    )
    p.add_argument(
        "--per-seed-heatmaps", action="store_true", help="also draw one heatmap per seed (as the published notebooks)"
    )
    p.add_argument(
        "--pool-studies",
        action="store_true",
        help="analyse the trials of several studies under EXPERIMENT together (refused without it: their "
        "seeds would be counted together)",
    )
    p.add_argument(
        "--model-rdm-distance",
        default=None,
        choices=DISTANCE_METRICS,
        help="model RDM distance for every RSA set (default: the set's model_rdm_distance_metric, else "
        "1 - Pearson for behaviour and 1 - cosine for brains, as published)",
    )
    p.add_argument(
        "--truncate",
        default="min_val_loss",
        choices=TRUNCATE_RULES,
        help="summary over each run's own epochs up to its minimum validation loss (default), all of "
        "them (none), or the published notebooks' rule: the baseline truncated, perturbed runs not "
        "(baseline_only); see docs/statistics.md",
    )
    p.add_argument("--rsa-similarity", default="spearman", choices=SIMILARITY_METRICS)
    return p
