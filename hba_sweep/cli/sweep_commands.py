"""``run`` and ``status`` subcommands; hba_sweep/cli/__init__.py registers them with these two functions."""

from __future__ import annotations

import argparse
import shlex
import tempfile
from typing import Any

from hba_sweep.artifacts.manifest import has_manifest, read_manifest_quietly
from hba_sweep.cli.arguments import add_command
from hba_sweep.foundation import storage
from hba_sweep.sweep import jobs
from hba_sweep.sweep.options import DEFAULT_STORAGE, RunOptions, add_arguments
from hba_sweep.sweep.status import format_status, identity_lines, read_study


def run_command(args: argparse.Namespace) -> int:
    """``run SPACE``: dry-run or run a study; user mistakes raise HBAError (exit 2)."""
    from hba_sweep.sweep.dryrun import describe  # reason: Ray and torch load when run runs, not for --help
    from hba_sweep.sweep.expand import expand  # reason: Ray and torch load when run runs, not for --help
    from hba_sweep.sweep.plan import make_plan  # reason: Ray and torch load when run runs, not for --help
    from hba_sweep.sweep.runner import run_study  # reason: Ray and torch load when run runs
    from hba_sweep.sweep.spec import load_search_space  # reason: Ray and torch load when run runs
    from hba_sweep.sweep.study_match import resume_preview  # reason: Ray and torch load when run runs
    from hba_sweep.sweep.trackers import validate  # reason: Ray loads when run runs, not for --help

    opts = RunOptions.from_args(args)
    if args.submit is not None and not args.dry_run:  # the study runs as a Ray Job on the cluster
        return jobs.submit(args.search_space, opts, args.submit)
    space = load_search_space(args.search_space)
    if args.dry_run:
        expansion = expand(space, check_files=True)
        plan = None if space.uses_searcher else make_plan(expansion.trials, space.fork_from_baseline)
        resumed = resume_preview(space, opts, plan) if args.resume and plan is not None else []
        *table, last = describe(space, expansion, plan).split("\n")
        print("\n".join([*table, *resumed, last]))
        return 0
    validate(opts.mlflow_uri, opts.wandb_project)  # before Ray starts or anything is written
    outcome = run_study(space, opts)
    root = storage.redact(outcome.root)  # a URI may carry credentials (secret_key=...)
    print(f"experiment: {root}")
    if outcome.nothing_left:
        print(f"nothing left to run: all {len(outcome.ok)} trials are finished (Ray was not started)")
    else:
        print(summary(outcome))
    for name in outcome.failed:
        print(f"  failed: {name}")
    for name in outcome.skipped:
        print(f"  skipped: {name}  (see status for the reason)")
    best = best_trial_line(outcome.root)
    if best:
        print(best)
    for line in next_steps(args, outcome.exit_code, root):
        print(line)
    return outcome.exit_code


def summary(outcome: Any) -> str:
    """One line of counts that add up to the study's trials; Ctrl+C says what is not finished."""
    counts = [len(outcome.ok), len(outcome.failed), len(outcome.skipped), len(outcome.interrupted)]
    line = (
        f"{counts[0]} trials finished, {counts[1]} failed, {counts[2]} skipped, {counts[3]} not finished "
        f"(of {sum(counts)})"
    )
    if outcome.interrupted:
        line += "; interrupted: the unfinished trials continue from their last checkpoint with --resume (next:)"
    return line


def best_trial_line(experiment: str) -> str | None:
    """For a searched study (SEARCH_ALG), the best trial and its config under the study's metric/mode."""
    manifest = read_manifest_quietly(experiment)
    if not manifest or not manifest.get("searcher"):
        return None
    from analysis.best_trial import best_trial_summary  # reason: pandas loads only for a searched study

    return best_trial_summary(experiment)


def next_steps(args: argparse.Namespace, exit_code: int, root: str) -> list[str]:
    """The commands to go on with, exactly as a shell takes them (paths and URIs quoted)."""
    lines = []
    if exit_code:  # the one resume command (Tune's own Tuner.restore hint goes to the study's driver.log)
        where = (["--storage", storage.redact(args.storage)] if args.storage != DEFAULT_STORAGE else []) + (
            ["--name", args.name] if args.name else []
        )  # --resume must find this experiment again
        lines.append(
            "next: "
            + shlex.join(["python", "-m", "hba_sweep", "run", args.search_space, *where, "--resume"])
            + "   (finishes unfinished, retries failed trials)"
        )
    lines.append("status: " + shlex.join(["python", "-m", "hba_sweep", "status", root]))
    lines.append("analyze: " + shlex.join(["python", "-m", "hba_sweep", "analyze", root]))
    if "***" in root:
        lines.append("  (*** stands for the credentials in --storage; give them again, or in the environment)")
    return lines


def status_command(args: argparse.Namespace) -> int:
    """``status DIR``: a table of trials and their states."""
    experiment = storage.experiment_path(args.experiment, args.storage)
    job = jobs.job_line(experiment)  # a study submitted with run --submit: its Ray job first
    if job:
        print(job)
        if not has_manifest(experiment):
            print("the study has not started yet (its job is queued or starting)")
            return 0
    if storage.is_uri(experiment):
        with tempfile.TemporaryDirectory(prefix="hba_status_") as local:  # object storage: its bookkeeping, local
            storage.copy_state(experiment, local)
            driver, rows = read_study(local)
            identity = identity_lines(local) if args.verbose else []
    else:
        driver, rows = read_study(experiment)
        identity = identity_lines(experiment) if args.verbose else []
    print(format_status(rows, driver))
    if identity:
        print("\n".join(identity))
    best = best_trial_line(experiment)
    if best:
        print(best)
    return 0


def add_run_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``run SEARCH_SPACE [--dry-run] [--resume] ...``."""
    p = add_command(
        subparsers,
        "run",
        run_command,
        "Run every trial of a search-space file (search_spaces/*.yaml: data; "
        "or search_spaces/*.py: Python, executed) on Ray Tune as one experiment: baselines first, each fork as soon "
        "as its baseline epoch exists.",
    )
    p.add_argument("search_space", help="a search-space file, e.g. search_spaces/demo.yaml (or .py)")
    p.add_argument("--dry-run", action="store_true", help="print the validated trial table; start nothing")
    p.add_argument(
        "--submit",
        nargs="?",
        const="",
        metavar="DASHBOARD",
        help="submit the study as a Ray Job to the cluster whose dashboard this is (default "
        "$RAY_API_SERVER_ADDRESS or http://127.0.0.1:8265); it survives the terminal",
    )
    add_arguments(p)  # the options of RunOptions (hba_sweep/sweep/options.py)
    return p


def add_status_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``status EXPERIMENT_DIR``."""
    p = add_command(subparsers, "status", status_command)
    p.add_argument(
        "experiment", help="an experiment directory or URI, e.g. ray_results/demo (or its name with --storage)"
    )
    p.add_argument(
        "--storage", help="storage path or URI holding the experiment, as `run` takes it (then EXPERIMENT is its name)"
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help="also show what the trials are: shared settings, input files (sha256), each trial's identity",
    )
    return p
