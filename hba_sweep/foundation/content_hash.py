"""Content digests of input files, each file hashed once per node.

A file's SHA-256 is remembered under its (device, inode, size, mtime, ctime): in the process and in a
small SQLite memo on the node (``HBA_SWEEP_HASH_MEMO``, default ``~/.cache/hba_sweep/file_hashes.sqlite``).
Any write to a file changes its ctime (even when the writer restores size and mtime), so a changed file is
hashed again; an unchanged one costs one ``stat``. A memo that cannot be opened or written is skipped
(the digests are then computed in the process only), never a failure.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from hba_sweep.foundation.io_utils import file_sha256

MEMO_ENV = "HBA_SWEEP_HASH_MEMO"
DEFAULT_MEMO = "~/.cache/hba_sweep/file_hashes.sqlite"
StatKey = tuple[str, int, int, int, int, int]

_memo: dict[StatKey, str] = {}
_lock = threading.Lock()
COUNTS = {"hashed": 0}  # files read and hashed by this process (tests, benchmarks)


def stat_key(path: str | os.PathLike) -> StatKey:
    """What identifies a file's content without reading it: path, device, inode, size, mtime, ctime."""
    st = os.stat(path)
    return (os.path.abspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def memo_path() -> Path:
    return Path(os.environ.get(MEMO_ENV) or DEFAULT_MEMO).expanduser()


def _connect() -> sqlite3.Connection | None:
    try:
        path = memo_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS digests (path TEXT, dev INTEGER, ino INTEGER, size INTEGER, "
            "mtime INTEGER, ctime INTEGER, sha256 TEXT, PRIMARY KEY (path, dev, ino, size, mtime, ctime))"
        )
        return conn
    except (OSError, sqlite3.Error):
        return None


def _from_memo(conn: sqlite3.Connection | None, keys: Sequence[StatKey]) -> dict[StatKey, str]:
    if conn is None or not keys:
        return {}
    found = {}
    try:
        for key in keys:
            row = conn.execute(
                "SELECT sha256 FROM digests WHERE path=? AND dev=? AND ino=? AND size=? AND mtime=? AND ctime=?", key
            ).fetchone()
            if row:
                found[key] = row[0]
    except sqlite3.Error:
        return found
    return found


def _to_memo(conn: sqlite3.Connection | None, rows: dict[StatKey, str]) -> None:
    if conn is None or not rows:
        return
    try:
        with conn:
            conn.executemany(
                "INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?, ?, ?)", [(*k, v) for k, v in rows.items()]
            )
    except sqlite3.Error:
        pass


def file_digests(paths: Iterable[str | os.PathLike]) -> list[str]:
    """The SHA-256 of each file, in order; each file read only if this node has not hashed it as it is now."""
    keys = [stat_key(p) for p in paths]
    with _lock:
        missing = [k for k in dict.fromkeys(keys) if k not in _memo]
        if missing:
            conn = _connect()
            try:
                _memo.update(_from_memo(conn, missing))
                fresh = {}
                for key in missing:
                    if key not in _memo:
                        fresh[key] = _memo[key] = file_sha256(key[0])
                        COUNTS["hashed"] += 1
                _to_memo(conn, fresh)
            finally:
                if conn is not None:
                    conn.close()
        return [_memo[k] for k in keys]


def file_digest(path: str | os.PathLike) -> str:
    """The SHA-256 of one file (see :func:`file_digests`)."""
    return file_digests([path])[0]


def set_digest(names: Sequence[str], digests: Sequence[str]) -> str:
    """One digest of a set of named files: their names and contents, in the given order."""
    outer = hashlib.sha256()
    for name, digest in zip(names, digests, strict=True):
        outer.update(f"{name}\0{digest}\n".encode())
    return outer.hexdigest()


def changed_files(before: Mapping[str, str], now: Mapping[str, str]) -> list[str]:
    """The files (keys of ``now``) recorded in ``before`` with another digest; files new to ``now`` are not."""
    return [path for path, digest in now.items() if before.get(path) not in (None, digest)]


def forget() -> None:
    """Drop the in-process memo (tests: the next call consults the node's memo or reads the files)."""
    with _lock:
        _memo.clear()
