"""A quiet terminal for ``run``: lines of Ray, Tune and the trackers that say nothing a user can act on
go to the study's log file (``driver.log`` in the study, or next to Ray's temporary files for a
study on object storage) instead of the terminal.

What is routed away: Ray's "Token authentication is enabled" warning (the ``run`` banner says how
the dashboard is protected), Tune's "The `process_trial_result` operation took 0.9 s" timing
warnings, and Tune's "Resume experiment with: Tuner.restore(...)" hint after Ctrl+C (``run``
prints this project's own resume command). W&B is silenced in its logging actors
(sweep/trackers.py); its run summaries stay in each run's own log files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator

from hba_sweep.foundation import storage

NOISE = (
    re.compile(r"Token authentication is enabled for this Ray cluster"),
    re.compile(r"Generated new authentication token and saved to"),
    re.compile(r"took [\d.]+ s, which may be a performance bottleneck"),
    re.compile(r"Resume (experiment|training) with: .*\.restore\("),
)
LOG_NAME = "driver.log"
LOGGERS = ("ray", "")  # Ray's own handler (it does not propagate) and the root logger's


def log_path(root: str, name: str) -> str:
    """Where the routed lines go: ``<study>/driver.log`` on a local path; a local file for object storage."""
    if storage.is_uri(root):
        return os.path.join(tempfile.gettempdir(), "hba_sweep_logs", f"{name}-{LOG_NAME}")
    return os.path.join(root, LOG_NAME)


class _RouteNoise(logging.Filter):
    """Drops the noisy records from a terminal handler after writing them to the log file."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.routed = 0
        self._last: logging.LogRecord | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not any(p.search(message) for p in NOISE):
            return True
        if record is self._last:  # the same record reaches Ray's handler and the root's
            return False
        self._last = record
        self.routed += 1
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(self.path, "a") as fh:
                fh.write(f"{record.levelname} {record.name}: {message}\n")
        except OSError:
            pass  # the log file is a courtesy: never fail a study over it
        return False


@contextlib.contextmanager
def quiet_terminal(path: str) -> Iterator[_RouteNoise]:
    """Route the noisy records of Ray's and the root logger's handlers to ``path`` while the block runs."""
    route = _RouteNoise(path)
    handlers = [h for name in LOGGERS for h in logging.getLogger(name).handlers]
    for handler in handlers:
        handler.addFilter(route)
    try:
        yield route
    finally:
        for handler in handlers:
            handler.removeFilter(route)
