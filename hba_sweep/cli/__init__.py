"""``python -m hba_sweep <command>``: the CLI layer (the top layer). Each command module registers
its subcommands here: train (train), preview (preview), run/status (sweep_commands), logs/stop (jobs_commands),
demo-data/infer/analyze (command_parsers; their handlers in demo_data, infer, analyze).

User mistakes (HBAError) print their message and exit 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Sequence

from hba_sweep.foundation.errors import HBAError, storage_error
from hba_sweep.foundation.redaction import redact_text

# command -> (module, function registering it, one-line help). Only the chosen command's module is
# imported (torch, Ray and matplotlib load inside commands), so --help and argument errors are fast.
COMMANDS = {
    "demo-data": (
        "hba_sweep.cli.command_parsers",
        "add_demo_data_parser",
        "generate deterministic demo data in the published formats",
    ),
    "train": ("hba_sweep.cli.train", "add_train_parser", "train one run (no Ray)"),
    "preview": (
        "hba_sweep.cli.preview",
        "add_preview_parser",
        "show what a perturbation does to one training batch (PNG + what changed)",
    ),
    "run": ("hba_sweep.cli.sweep_commands", "add_run_parser", "run a study from a search-space file on Ray Tune"),
    "status": (
        "hba_sweep.cli.sweep_commands",
        "add_status_parser",
        "done / running / failed / pending per trial of an experiment",
    ),
    "logs": ("hba_sweep.cli.jobs_commands", "add_logs_parser", "the output of a study submitted with run --submit"),
    "stop": ("hba_sweep.cli.jobs_commands", "add_stop_parser", "stop a study submitted with run --submit"),
    "analyze": (
        "hba_sweep.cli.command_parsers",
        "add_analyze_parser",
        "evaluate every checkpoint of a study: tables, figures, report",
    ),
    "infer": (
        "hba_sweep.cli.command_parsers",
        "add_infer_parser",
        "evaluate a run's checkpoint(s) from the study's inference YAML",
    ),
}


def chosen_command(argv: Sequence[str] | None) -> str | None:
    """The command named on the command line (the first word that is not an option)."""
    args = sys.argv[1:] if argv is None else argv
    return next((a for a in args if not a.startswith("-")), None)


def build_parser(argv: Sequence[str] | None = None, everything: bool = True) -> argparse.ArgumentParser:
    """The CLI parser; with ``everything=False`` only the command ``argv`` names is fully built
    (the others are listed by name and help line, without importing their modules)."""
    parser = argparse.ArgumentParser(
        prog="python -m hba_sweep", description="Ray Tune sweeps and analysis for CLIP-HBA perturbation studies."
    )
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
