"""Test-only kill points of the driver: ``HBA_SWEEP_DRIVER_KILL=<point>[:<n>]`` SIGKILLs the driver
the n-th time (default 1st) it passes ``<point>``; the kill-at-every-point tests name each point."""

from __future__ import annotations

import os
import signal

ENV = "HBA_SWEEP_DRIVER_KILL"
POINTS = ("locked", "manifest_written", "suggested", "result", "trial_complete", "fit_returned", "ended")
_seen: dict[str, int] = {}


def kill_point(point: str) -> None:
    assert point in POINTS, f"kill point {point!r} is not listed in POINTS"
    spec = os.environ.get(ENV)
    if not spec:
        return
    name, _, count = spec.partition(":")
    if name != point:
        return
    _seen[point] = _seen.get(point, 0) + 1
    if _seen[point] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
