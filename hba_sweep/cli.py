"""``python -m hba_sweep <command>``: each subsystem registers its own subcommands here.

User mistakes (HBAError) print their message and exit 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from typing import Sequence

from hba_sweep.foundation.errors import HBAError, storage_error
from hba_sweep.foundation.redaction import redact_text

# command -> (module, function registering it, one-line help). Only the chosen command's module is
# imported (torch, Ray and matplotlib load inside commands), so --help and argument errors are fast.
COMMANDS = {
    "demo-data": ("hba_sweep.command_parsers", "add_demo_data_parser",
                  "generate deterministic demo data in the published formats"),
    "train": ("hba_sweep.cli", "add_train_parser", "train one run (no Ray)"),
    "run": ("hba_sweep.sweep.cli", "add_run_parser", "run a study from a search-space file on Ray Tune"),
    "status": ("hba_sweep.sweep.cli", "add_status_parser",
               "done / running / failed / pending per trial of an experiment"),
    "logs": ("hba_sweep.sweep.jobs", "add_logs_parser", "the output of a study submitted with run --submit"),
    "stop": ("hba_sweep.sweep.jobs", "add_stop_parser", "stop a study submitted with run --submit"),
    "analyze": ("hba_sweep.command_parsers", "add_analyze_parser", "evaluate every checkpoint of a study: tables, figures, report"),
    "infer": ("hba_sweep.command_parsers", "add_infer_parser",
              "evaluate a run's checkpoint(s) from the study's inference YAML"),
}

def add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train one run (no Ray)",
                              description="Train one CLIP-HBA run from a YAML config; writes save_path/<run name>/.")
    p.add_argument("--config", required=True, help="YAML config (the study's keys are accepted)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue this run from its latest checkpoint")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from hba_sweep.artifacts import checkpoint
    from hba_sweep.config import load_config, run_dir
    from hba_sweep.training import run_training_experiment

    cfg = load_config(args.config, args.overrides)
    if args.resume and cfg.resume_from is None:
        if checkpoint.list_epochs(run_dir(cfg)):
            cfg = cfg.replace(resume_from=str(run_dir(cfg)))
        else:
            print(f"--resume: {run_dir(cfg)} has no checkpoint yet; starting the run.", file=sys.stderr)
    summary = run_training_experiment(cfg)
    if summary["status"] == "diverged":
        print(f"error: {summary['run_dir']}: {summary['message']}. The run stopped; metrics.csv records the "
              "non-finite values.", file=sys.stderr)
        return 2
    print(f"done: {summary['run_dir']} ({summary['status']}, last epoch {summary['epoch']}, val_loss "
          f"{summary['val_loss']:.4g}, behavioral_rsa_rho {summary['behavioral_rsa_rho']:.3f}); metrics in "
          f"{summary['run_dir']}/metrics.csv")
    return 0


def chosen_command(argv: Sequence[str] | None) -> str | None:
    """The command named on the command line (the first word that is not an option)."""
    args = sys.argv[1:] if argv is None else argv
    return next((a for a in args if not a.startswith("-")), None)


def build_parser(argv: Sequence[str] | None = None, everything: bool = True) -> argparse.ArgumentParser:
    """The CLI parser; with ``everything=False`` only the command ``argv`` names is fully built
    (the others are listed by name and help line, without importing their modules)."""
    parser = argparse.ArgumentParser(prog="python -m hba_sweep",
                                     description="Ray Tune sweeps and analysis for CLIP-HBA perturbation studies.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = chosen_command(argv)
    for name, (module_name, function, help_line) in COMMANDS.items():
        if not everything and name != chosen:
            subparsers.add_parser(name, help=help_line, add_help=False)
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # subsystem not installed in this checkout
            raise
        getattr(module, function)(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv, everything=False)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except HBAError as exc:
        print(redact_text(f"error: {exc}"), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os._exit(0)
    except OSError as exc:
        fault = storage_error(exc)  # a full disk, a read-only folder: the path and the fix
        if fault is None:
            print(redact_text(traceback.format_exc()), end="", file=sys.stderr)
            return 1
        print(redact_text(f"error: {fault}"), file=sys.stderr)
        return fault.exit_code
    except Exception:  # a bug or an unforeseen failure: the traceback, with any credentials hidden
        print(redact_text(traceback.format_exc()), end="", file=sys.stderr)
        return 1
