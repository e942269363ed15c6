"""``logs`` and ``stop``: a study submitted with ``run --submit`` (a Ray Job)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from hba_sweep.cli.arguments import add_command
from hba_sweep.foundation import storage
from hba_sweep.foundation.errors import ConfigError
from hba_sweep.sweep.jobs import JOB_FILE, client, read_job


def _job_or_exit(experiment: str) -> dict[str, Any]:
    job = read_job(experiment)
    if job is None:
        raise ConfigError(
            f"{storage.redact(experiment)}: no {JOB_FILE}, the study was not submitted as a Ray job. "
            "Fix: give the experiment `run --submit` printed; a study run in a terminal logs there."
        )
    return job


def logs_command(args: argparse.Namespace) -> int:
    """``logs EXPERIMENT [--follow]``: the job driver's output (Tune's progress table)."""
    experiment = storage.experiment_path(args.experiment, args.storage)
    job = _job_or_exit(experiment)
    jobs = client(job["dashboard"])
    if not args.follow:
        sys.stdout.write(jobs.get_job_logs(job["submission_id"]))
        return 0

    async def tail() -> None:
        async for lines in jobs.tail_job_logs(job["submission_id"]):
            sys.stdout.write(lines)
            sys.stdout.flush()

    asyncio.run(tail())
    return 0


def stop_command(args: argparse.Namespace) -> int:
    """``stop EXPERIMENT``: stop the job (Tune saves the trials' state; ``run --resume`` finishes them)."""
    experiment = storage.experiment_path(args.experiment, args.storage)
    job = _job_or_exit(experiment)
    stopped = client(job["dashboard"]).stop_job(job["submission_id"])
    print(f"Ray job {job['submission_id']}: " + ("stop requested" if stopped else "not running"))
    return 0


def _experiment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "experiment", help="the experiment `run --submit` printed (a directory or URI, or a name with --storage)"
    )
    p.add_argument("--storage", help="storage path or URI holding the experiment (then EXPERIMENT is its name)")


def add_logs_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = add_command(subparsers, "logs", logs_command)
    _experiment_args(p)
    p.add_argument("--follow", action="store_true", help="keep printing until the job ends")
    return p


def add_stop_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = add_command(subparsers, "stop", stop_command)
    _experiment_args(p)
    return p
