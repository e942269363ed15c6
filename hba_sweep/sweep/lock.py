"""One driver per study: ``<study>/driver.lock`` holds the pid, host and start time of the driver.

On a local (or mounted) path the lock is taken with an exclusive create, so two drivers can
never both hold it; a lock whose pid no longer runs on this host, or runs another program (a
reused pid, checked by its command line), is stale and is taken over (said in one line).
On object storage (s3://, gs://, ...) there is no exclusive create: the lock is a best-effort
marker (written, then read back to check it is ours) that catches a second driver started
after the first has written it, not two started in the same second. A lock left by a driver
on another host cannot be checked from here: the message names the file to delete.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import Any

import psutil

from hba_sweep.foundation import storage
from hba_sweep.foundation.errors import ConfigError


def _me() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(sys.argv)[:500],
    }


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_lock(root: str) -> dict[str, Any] | None:
    """The study's lock record, or None."""
    return storage.read_json_dict(storage.join(root, storage.LOCK_FILE))


def runs_a_driver(pid: int, command: str = "") -> bool:
    """Whether ``pid`` runs an hba_sweep driver: its command line names hba_sweep or is the one the
    lock recorded (a pid reused by another program is not the study's driver)."""
    try:
        line = " ".join(psutil.Process(pid).cmdline())
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # not ours to inspect: assume it is the driver (never take over a live one blindly)
        return True
    return "hba_sweep" in line or (bool(command) and line[:500] == command)


def driver_state(lock: dict[str, Any] | None) -> str:
    """'running', 'gone' (its pid no longer runs an hba_sweep driver on this host) or 'unknown' (another host)."""
    if lock is None:
        return "none"
    if lock.get("host") != socket.gethostname():
        return "unknown"
    pid = int(lock.get("pid", -1))
    return "running" if pid_alive(pid) and runs_a_driver(pid, str(lock.get("command", ""))) else "gone"


def _refuse(root: str, holder: dict[str, Any]) -> ConfigError:
    path = storage.redact(storage.join(root, storage.LOCK_FILE))
    return ConfigError(
        f"{storage.redact(root)}: another driver runs this study: pid {holder.get('pid')} on "
        f"{holder.get('host')} since {holder.get('started')} ({holder.get('command', '')}). "
        f"Fix: wait for it or stop it; if that driver is gone (another host), delete {path}."
    )


def check_free(root: str) -> None:
    """Refuse now (before Ray starts) if a live driver holds the study; ``acquire`` takes the lock later."""
    holder = read_lock(root)
    if holder is not None and holder.get("pid") != os.getpid() and driver_state(holder) != "gone":
        raise _refuse(root, holder)


def acquire(root: str) -> dict[str, Any]:
    """Take the study's lock for this process or raise ConfigError naming the holder."""
    path = storage.join(root, storage.LOCK_FILE)
    me = _me()
    if storage.is_uri(root):
        holder = read_lock(root)
        if holder is not None and holder.get("pid") != me["pid"]:
            raise _refuse(root, holder)
        storage.write_json(path, me)
        if (read_lock(root) or {}).get("pid") != me["pid"]:
            raise _refuse(root, read_lock(root) or {})
        return me
    os.makedirs(root, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = read_lock(root)
            if holder is not None and driver_state(holder) != "gone":
                raise _refuse(root, holder) from None
            if holder is not None and pid_alive(int(holder.get("pid", -1))):
                print(
                    f"note: {storage.redact(path)}: pid {holder.get('pid')} runs, but not an hba_sweep driver "
                    "(the pid was reused): taking the lock over",
                    file=sys.stderr,
                )
            os.replace(path, f"{path}.stale")  # dead on this host (or unreadable): take it over
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        return me
    raise _refuse(root, read_lock(root) or {})


def release(root: str, me: dict[str, Any]) -> None:
    """Give the lock back if it is still ours."""
    if (read_lock(root) or {}).get("pid") == me["pid"]:
        storage.remove(storage.join(root, storage.LOCK_FILE))
