"""The one fault-injection protocol, for tests only: ``HBA_SWEEP_FAULT=<point>[:<n>[:<marker>[:<trial>]]]``.

Unset (always, outside tests), nothing happens. Points:

- a driver point (:data:`DRIVER_POINTS`, passed by ``hba_sweep.sweep``): the study driver SIGKILLs
  itself the n-th time (default the 1st) it passes the point (tests/test_sweep_kill_points.py names each);
- ``epoch``: a trial whose name contains ``<trial>`` (any trial without it) raises RuntimeError when it
  reports epoch n, once: the marker file, created exclusively, keeps a retried trial from failing again
  (the trainable calls :func:`maybe_fault` per report).
"""

from __future__ import annotations

import os
import signal

ENV = "HBA_SWEEP_FAULT"
DRIVER_POINTS = ("locked", "manifest_written", "suggested", "result", "trial_complete", "fit_returned", "ended")
EPOCH = "epoch"
_seen: dict[str, int] = {}


def _armed(point: str) -> list[str] | None:
    """The protocol's fields after the point when $HBA_SWEEP_FAULT names ``point``; None otherwise."""
    spec = os.environ.get(ENV)
    if not spec:
        return None
    name, *rest = spec.split(":", 3)
    return rest if name == point else None


def kill_point(point: str) -> None:
    """The driver passes ``point``: SIGKILL itself if this is the armed pass."""
    assert point in DRIVER_POINTS, f"kill point {point!r} is not listed in DRIVER_POINTS"
    rest = _armed(point)
    if rest is None:
        return
    _seen[point] = _seen.get(point, 0) + 1
    if _seen[point] == int(rest[0] if rest and rest[0] else 1):
        os.kill(os.getpid(), signal.SIGKILL)


def maybe_fault(trial_name: str, epoch: int) -> None:
    """A trial reports ``epoch``: raise once if ``epoch:<epoch>:<marker>[:<trial part>]`` names it."""
    rest = _armed(EPOCH)
    if rest is None:
        return
    at, marker, *part = rest
    if int(at) != epoch or (part and part[0] not in trial_name):
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    raise RuntimeError(f"{ENV}: injected failure in {trial_name} at epoch {epoch}")
