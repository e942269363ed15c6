"""Experiment storage: a local path or a pyarrow URI (s3://, gs://, ...), the one way every layer reads
and writes it. Functions take a path or URI; those that read also take ``fs`` (a pyarrow filesystem the
caller opened with :func:`locate`, the path then being inside it; errors are then left as pyarrow raises
them, for the caller to word)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pyarrow.fs

from hba_sweep.foundation.errors import (
    ConfigError,
    HBAError,
    StorageError,
    storage_error,
)
from hba_sweep.foundation.io_utils import atomic_write_text
from hba_sweep.foundation.redaction import (  # storage.redact: the one redaction, re-exported
    redact,
    redact_text,
)

FileSystem = pyarrow.fs.FileSystem


def is_uri(path: str) -> bool:
    return "://" in path


def join(root: str, *parts: str) -> str:
    """``root/part/...``; in a URI the parts go into its path, before any ``?query`` (pyarrow options
    such as ``endpoint_override``), so ``s3://b/x?endpoint_override=h`` + ``demo`` is ``s3://b/x/demo?...``."""
    if not is_uri(root):
        return "/".join([root.rstrip("/"), *parts])
    url = urlsplit(root)
    return urlunsplit(url._replace(path="/".join([url.path.rstrip("/"), *parts])))


def parent(root: str) -> str:
    """``root`` without its last part (a study's storage), for a local path or a URI (its query kept)."""
    if not is_uri(root):
        return os.path.dirname(root.rstrip("/"))
    url = urlsplit(root)
    return urlunsplit(url._replace(path=url.path.rstrip("/").rsplit("/", 1)[0]))


def absolute(storage: str) -> str:
    """A URI as it is; a local path expanded and made absolute (Tune and a Ray Job's driver need it)."""
    return storage if is_uri(storage) else os.path.abspath(os.path.expanduser(storage))


def experiment_root(storage: str, name: str) -> str:
    """``<storage>/<name>``, the storage made :func:`absolute`."""
    return join(absolute(storage), name)


def require_bucket(root: str) -> None:
    """On object storage, the URI's bucket must exist (nothing creates it): a StorageError saying to create it."""
    if not is_uri(root):
        return
    fs, path = _fs(root)
    bucket = path.split("/", 1)[0]
    with reaching(root, "read the storage"):
        missing = fs.get_file_info(bucket).type == pyarrow.fs.FileType.NotFound
    if missing:
        raise StorageError(
            f"{redact(root)}: the bucket {bucket!r} does not exist; nothing was started. Fix: create "
            f"it (e.g. `aws s3 mb s3://{bucket}`, with --endpoint-url for another S3 server), or give "
            "--storage a bucket that exists."
        )


def prefix_cache_dir(root: str) -> str:
    """Where a study's trials share the frozen-prefix cache: ``<root>/prefix_cache`` on a file
    system every node sees, else (object storage) a node-local folder; entries are keyed by
    backbone, weights, image set and split, so sharing across studies is safe."""
    if is_uri(root):
        return os.path.join(os.path.expanduser("~"), ".cache", "hba_sweep", "prefix_cache")
    return f"{root}/prefix_cache"


@contextmanager
def reaching(path: str, action: str) -> Iterator[None]:
    """Turn a storage failure (unreachable endpoint, refused credentials, bad URI, full or read-only
    disk) into a StorageError naming the (redacted) path and the fix."""
    try:
        yield
    except HBAError:
        raise
    except (OSError, ValueError) as exc:
        fault = storage_error(exc, redact(path))
        if fault is not None:
            raise fault from None
        if not is_uri(path):
            raise
        raise StorageError(
            f"{redact(path)}: cannot {action} ({redact_text(str(exc))}). Fix: check the network, the "
            "endpoint (endpoint_override=...) and the credentials, or use a local path."
        ) from None


def _fs(path: str):
    if is_uri(path):
        with reaching(path, "open the storage"):  # a network failure; a malformed URI is a ConfigError
            try:
                return pyarrow.fs.FileSystem.from_uri(path)
            except (pyarrow.ArrowInvalid, ValueError) as exc:
                raise ConfigError(
                    f"{redact(path)}: not a storage URI pyarrow accepts ({redact_text(str(exc))}). Fix: "
                    "e.g. s3://bucket/prefix?endpoint_override=host:port&scheme=http; credentials from "
                    "the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or as "
                    "s3://KEY:SECRET@bucket/prefix; percent-encode spaces (%20)."
                ) from None
    return pyarrow.fs.LocalFileSystem(), path


def locate(path: str) -> tuple[FileSystem, str]:
    """(filesystem, path inside it) of a URI or a local path (made :func:`absolute`); errors (a bad URI,
    an unreachable store) are pyarrow's own, for callers that word them."""
    if is_uri(path):
        return pyarrow.fs.FileSystem.from_uri(path)
    return pyarrow.fs.LocalFileSystem(), absolute(path)


def is_local(fs: FileSystem) -> bool:
    return isinstance(fs, pyarrow.fs.LocalFileSystem)


@contextmanager
def _opened(path: str, fs: FileSystem | None, action: str | None) -> Iterator[tuple[FileSystem, str]]:
    """(filesystem, inner path): the caller's ``fs`` as given; else from ``path``, failures turned into
    StorageErrors by :func:`reaching` (unless ``action`` is None)."""
    if fs is not None:
        yield fs, path
        return
    own, inner = _fs(path)
    if action is None:
        yield own, inner
        return
    with reaching(path, action):
        yield own, inner


def _type(path: str, fs: FileSystem | None) -> Any:
    with _opened(path, fs, "read the storage") as (where, inner):
        return where.get_file_info(inner).type


def exists(path: str, fs: FileSystem | None = None) -> bool:
    return _type(path, fs) != pyarrow.fs.FileType.NotFound


def is_file(path: str, fs: FileSystem | None = None) -> bool:
    return _type(path, fs) == pyarrow.fs.FileType.File


def is_dir(path: str, fs: FileSystem | None = None) -> bool:
    return _type(path, fs) == pyarrow.fs.FileType.Directory


def read_bytes(path: str, fs: FileSystem | None = None, limit: int | None = None) -> bytes:
    """The file's bytes (its first ``limit`` bytes with a limit)."""
    with _opened(path, fs, "read the storage") as (where, inner), where.open_input_stream(inner) as fh:
        return fh.read() if limit is None else fh.read(limit)


def sha256(path: str, fs: FileSystem | None = None) -> str:
    """SHA-256 of a file, streamed."""
    digest = hashlib.sha256()
    with _opened(path, fs, "read the storage") as (where, inner), where.open_input_stream(inner) as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def find_files(root: str, fs: FileSystem | None = None) -> list[str]:
    """Every file under ``root``, recursively (empty if it does not exist), as paths like ``root``'s."""
    with _opened(root, fs, None) as (where, inner):
        infos = where.get_file_info(pyarrow.fs.FileSelector(inner, recursive=True, allow_not_found=True))
    files = [info.path for info in infos if info.type == pyarrow.fs.FileType.File]
    return files if fs is not None else [join(root, p[len(inner) :].lstrip("/")) for p in files]


def copy_files(
    src: str, dst: str, names: list[str], src_fs: FileSystem | None = None, dst_fs: FileSystem | None = None
) -> None:
    """Copy the named files that exist from folder ``src`` to folder ``dst`` (created); a filesystem
    left None is the local one."""
    src_fs, dst_fs = src_fs or pyarrow.fs.LocalFileSystem(), dst_fs or pyarrow.fs.LocalFileSystem()
    dst_fs.create_dir(dst, recursive=True)
    for name in names:
        if src_fs.get_file_info(f"{src}/{name}").type == pyarrow.fs.FileType.File:
            pyarrow.fs.copy_files(
                f"{src}/{name}", f"{dst}/{name}", source_filesystem=src_fs, destination_filesystem=dst_fs
            )


def write_json(path: str, data: dict[str, Any]) -> None:
    """Write JSON (atomically on a local path)."""
    write_text(path, json.dumps(data, indent=1, default=str))


def write_text(path: str, text: str) -> None:
    """Write a text file (atomically on a local path; one object write on object storage)."""
    if not is_uri(path):
        atomic_write_text(path, text)
        return
    fs, inner = _fs(path)
    with reaching(path, "write to the storage"):
        fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(inner) as fh:
            fh.write(text.encode("utf-8"))


def read_text(path: str, fs: FileSystem | None = None) -> str:
    return read_bytes(path, fs).decode("utf-8")


def experiment_path(experiment: str, storage: str | None = None) -> str:
    """What ``status``/``analyze``/``logs`` name: a directory or URI, or (with ``--storage``, a path or
    URI as ``run`` takes it) the experiment's name joined into the storage's path, query kept."""
    return join(storage, experiment) if storage else experiment


SKIPPED_IN_COPIES = ("checkpoint_", "prefix_cache", "analysis")


def copy_state(root: str, dest: str) -> None:
    """Copy an experiment's bookkeeping (the study manifest, Tune's experiment and trial state, results) from
    object storage to the local folder ``dest``; checkpoints, the prefix cache and the analysis stay."""
    fs, inner = _fs(root)
    inner = inner.rstrip("/")
    local = pyarrow.fs.LocalFileSystem()
    with reaching(root, "read the storage"):
        infos = fs.get_file_info(pyarrow.fs.FileSelector(inner, recursive=True))
    for info in infos:
        rel = info.path[len(inner) :].lstrip("/")
        if info.type != pyarrow.fs.FileType.File or any(part.startswith(SKIPPED_IN_COPIES) for part in rel.split("/")):
            continue
        target = os.path.join(dest, *rel.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        pyarrow.fs.copy_files(info.path, target, source_filesystem=fs, destination_filesystem=local)


LOCK_FILE = "driver.lock"  # in the study directory: the driver that runs it


def read_json(path: str, fs: FileSystem | None = None) -> Any:
    """Parsed JSON at a local path or URI (raises OSError / ValueError)."""
    return json.loads(read_text(path, fs))


def read_json_dict(path: str, fs: FileSystem | None = None) -> dict[str, Any] | None:
    """The JSON object at ``path``, or None (missing, unreadable, not JSON, or not an object)."""
    try:
        data = read_json(path, fs)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def listdir(path: str, fs: FileSystem | None = None) -> list[str]:
    """Names of the entries of a directory (empty if it does not exist)."""
    with _opened(path, fs, None) as (where, inner):
        infos = where.get_file_info(pyarrow.fs.FileSelector(inner, allow_not_found=True))
    return sorted(info.base_name for info in infos)


def remove(path: str) -> None:
    """Delete a file if it exists."""
    fs, inner = _fs(path)
    try:
        fs.delete_file(inner)
    except FileNotFoundError:
        pass


def download_dir(path: str, local: str) -> str:
    """Copy a directory (local path or URI) to the local folder ``local``; return ``local``."""
    fs, inner = _fs(path)
    os.makedirs(local, exist_ok=True)
    pyarrow.fs.copy_files(inner, local, source_filesystem=fs, destination_filesystem=pyarrow.fs.LocalFileSystem())
    return local
