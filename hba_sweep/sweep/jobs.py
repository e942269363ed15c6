"""Studies as Ray Jobs: ``run --submit [DASHBOARD]`` hands the study driver to a cluster through
Ray's Job Submission API, so it survives the terminal and its output (Tune's progress table) is on
the dashboard's job page; ``status``, ``logs`` and ``stop`` follow it.

The submitted entrypoint is the same ``run`` command with absolute paths (the head node must see
the search-space file, the data and the storage: a shared file system, the same checkout, or
object storage); the job finds the cluster through the ``RAY_ADDRESS`` Ray gives it. The job is
recorded in ``<experiment>/job.json`` (submission id and dashboard address; never the token).
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from hba_sweep.artifacts.manifest import refuse_existing
from hba_sweep.foundation import storage
from hba_sweep.foundation.errors import ConfigError
from hba_sweep.sweep import cluster
from hba_sweep.sweep.options import RunOptions, command_line

JOB_FILE = "job.json"
DEFAULT_DASHBOARD = "http://127.0.0.1:8265"


def dashboard_url(address: str | None) -> str:
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS") or DEFAULT_DASHBOARD
    return (address if "://" in address else f"http://{address}").rstrip("/")


def client(url: str):
    """A JobSubmissionClient for the dashboard at ``url``, with this machine's token if it asks for one."""
    from ray.job_submission import JobSubmissionClient  # reason: Ray loads only to reach a dashboard

    mode = cluster.dashboard_auth_mode(url)
    if mode is None:
        raise ConfigError(
            f"--submit {url}: no Ray dashboard answers there. Fix: give the head's dashboard address "
            "(`ray start --head` prints it; port 8265 unless --dashboard-port), e.g. "
            f"--submit {DEFAULT_DASHBOARD}."
        )
    headers = {}
    if mode == "token":
        token = cluster.read_token()
        if token is None:
            raise ConfigError(
                f"--submit {url}: the cluster uses Ray's token authentication and this machine has no "
                f"token. Fix: copy the head's token to {cluster.TOKEN_HINT} (on the head, "
                "`ray get-auth-token` prints it)."
            )
        headers = {"Authorization": f"Bearer {token}"}
    try:
        return JobSubmissionClient(url, headers=headers)
    except (ConnectionError, RuntimeError) as exc:
        raise ConfigError(
            f"--submit {url}: the dashboard refused the connection ({exc}). "
            f"Fix: use the head's token in {cluster.TOKEN_HINT}."
        ) from None


def entrypoint(search_space: str, opts: RunOptions, name: str, python: str = "python") -> str:
    """The ``run`` command the job executes: this one, with absolute paths and without --submit (the
    options RunOptions declares as forwarded)."""
    opts = replace(opts, storage=storage.absolute(opts.storage), name=name)
    return shlex.join([python, "-m", "hba_sweep", "run", os.path.abspath(search_space), *command_line(opts)])


def submit(search_space: str, opts: RunOptions, dashboard: str | None, echo: Callable[[str], None] = print) -> int:
    """Submit the study as a Ray Job; record it in <experiment>/job.json; print how to follow it."""
    from hba_sweep.sweep.spec import load_search_space  # reason: torch loads (through config) only to submit

    space = load_search_space(search_space)  # syntax and names checked before anything is sent
    name = opts.name or space.name
    root = storage.experiment_root(opts.storage, name)
    if not opts.resume:
        refuse_existing(root)
    url = dashboard_url(dashboard)
    jobs = client(url)
    submission_id = f"hba_{name}_{time.strftime('%Y%m%d_%H%M%S')}"
    command = entrypoint(search_space, opts, name)
    jobs.submit_job(
        entrypoint=command,
        submission_id=submission_id,
        metadata={"hba_sweep": "run", "experiment": storage.redact(root)},
    )
    storage.write_json(
        storage.join(root, JOB_FILE),
        {"submission_id": submission_id, "dashboard": url, "entrypoint": storage.redact(command)},
    )
    where = shlex.quote(storage.redact(root))
    echo(f"submitted Ray job {submission_id}: the study runs on the cluster, whatever happens to this terminal.")
    echo(f"  dashboard: {url}/#/jobs/{submission_id}  ({cluster.PASTE_HINT})")
    echo(f"  status: python -m hba_sweep status {where}")
    echo(f"  logs:   python -m hba_sweep logs {where} --follow")
    echo(f"  stop:   python -m hba_sweep stop {where}")
    return 0


def read_job(experiment: str) -> dict[str, Any] | None:
    """The job.json of an experiment (directory or URI); None if the study was not submitted."""
    path = storage.join(experiment, JOB_FILE)
    if not storage.exists(path):
        return None
    return json.loads(storage.read_text(path))


def job_line(experiment: str) -> str | None:
    """'Ray job <id>: RUNNING (dashboard ...)' for a submitted study; None otherwise."""
    job = read_job(experiment)
    if job is None:
        return None
    try:
        state = str(client(job["dashboard"]).get_job_status(job["submission_id"]).value)
    except ConfigError as exc:
        state = f"unknown ({exc})"
    return f"Ray job {job['submission_id']}: {state}  (dashboard {job['dashboard']}/#/jobs/{job['submission_id']})"
