"""``train --config X.yaml``: one run without Ray."""

from __future__ import annotations

import argparse
import sys

from hba_sweep.cli.arguments import add_command, add_overrides
from hba_sweep.foundation.safe_paths import writes_inside


def add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers,
        "train",
        _train,
        "Train one CLIP-HBA run from a YAML config; writes save_path/<run name>/.",
    )
    p.add_argument("--config", required=True, help="YAML config (the study's keys are accepted)")
    add_overrides(p, "override a config key (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue this run from its latest checkpoint")


def _train(args: argparse.Namespace) -> int:
    from hba_sweep.artifacts import checkpoint  # reason: torch loads when train runs, not for --help
    from hba_sweep.config import load_config, run_dir  # reason: torch loads when train runs, not for --help
    from hba_sweep.training import run_training_experiment  # reason: torch loads when train runs, not for --help

    cfg = load_config(args.config, args.overrides)
    if args.resume and cfg.resume_from is None:
        if checkpoint.list_epochs(run_dir(cfg)):
            cfg = cfg.replace(resume_from=str(run_dir(cfg)))
        else:
            print(f"--resume: {run_dir(cfg)} has no checkpoint yet; starting the run.", file=sys.stderr)
    with writes_inside(cfg.save_path):  # no write through a symlinked folder below save_path
        summary = run_training_experiment(cfg)
    if summary["status"] == "diverged":
        print(
            f"error: {summary['run_dir']}: {summary['message']}. The run stopped; metrics.csv records the "
            "non-finite values.",
            file=sys.stderr,
        )
        return 2
    print(
        f"done: {summary['run_dir']} ({summary['status']}, last epoch {summary['epoch']}, val_loss "
        f"{summary['val_loss']:.4g}, behavioral_rsa_rho {summary['behavioral_rsa_rho']:.3f}); metrics in "
        f"{summary['run_dir']}/metrics.csv"
    )
    return 0
