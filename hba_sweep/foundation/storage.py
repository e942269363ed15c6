"""Experiment storage: a local path or a pyarrow URI (s3://, gs://, ...), and the study manifest."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from typing import Any, Iterator
from urllib.parse import urlsplit, urlunsplit

import pyarrow.fs

from hba_sweep.foundation.errors import ConfigError, HBAError, StorageError, storage_error
from hba_sweep.foundation.io_utils import atomic_write_text
from hba_sweep.foundation.redaction import redact, redact_text  # storage.redact: the one redaction, re-exported

MANIFEST = "study.json"


def is_uri(path: str) -> bool:
    return "://" in path


def join(root: str, *parts: str) -> str:
    """``root/part/...``; in a URI the parts go into its path, before any ``?query`` (pyarrow options
    such as ``endpoint_override``), so ``s3://b/x?endpoint_override=h`` + ``demo`` is ``s3://b/x/demo?...``."""
    if not is_uri(root):
        return "/".join([root.rstrip("/"), *parts])
    url = urlsplit(root)
    return urlunsplit(url._replace(path="/".join([url.path.rstrip("/"), *parts])))


def absolute(storage: str) -> str:
    """A URI as it is; a local path expanded and made absolute (Tune and a Ray Job's driver need it)."""
    return storage if is_uri(storage) else os.path.abspath(os.path.expanduser(storage))


def experiment_root(storage: str, name: str) -> str:
    """``<storage>/<name>``, the storage made :func:`absolute`."""
    return join(absolute(storage), name)


def refuse_existing(root: str) -> None:
    """ConfigError if a study already lives at ``root`` (a new run must not mix with it)."""
    if exists(join(root, MANIFEST)):
        raise ConfigError(f"{redact(root)}: this experiment exists already. Fix: add --resume to finish it "
                          "(or grow it after editing the search space), or give --name NEW (or another --storage).")


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
        raise StorageError(f"{redact(path)}: cannot {action} ({redact_text(str(exc))}). Fix: check the network, the "
                           "endpoint (endpoint_override=...) and the credentials, or use a local path.") from None


def _fs(path: str):
    if is_uri(path):
        with reaching(path, "open the storage"):  # a network failure; a malformed URI is a ConfigError
            try:
                return pyarrow.fs.FileSystem.from_uri(path)
            except (pyarrow.ArrowInvalid, ValueError) as exc:
                raise ConfigError(f"{redact(path)}: not a storage URI pyarrow accepts ({redact_text(str(exc))}). Fix: "
                                  "e.g. s3://bucket/prefix?endpoint_override=host:port&scheme=http; credentials from "
                                  "the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or as "
                                  "s3://KEY:SECRET@bucket/prefix; percent-encode spaces (%20).") from None
    return pyarrow.fs.LocalFileSystem(), path


def exists(path: str) -> bool:
    fs, inner = _fs(path)
    with reaching(path, "read the storage"):
        return fs.get_file_info(inner).type != pyarrow.fs.FileType.NotFound


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


def read_text(path: str) -> str:
    fs, inner = _fs(path)
    with reaching(path, "read the storage"), fs.open_input_stream(inner) as fh:
        return fh.read().decode("utf-8")


def experiment_path(experiment: str, storage: str | None = None) -> str:
    """What ``status``/``analyze``/``logs`` name: a directory or URI, or (with ``--storage``, a path or
    URI as ``run`` takes it) the experiment's name joined into the storage's path, query kept."""
    return join(storage, experiment) if storage else experiment


SKIPPED_IN_COPIES = ("checkpoint_", "prefix_cache", "analysis")


def copy_state(root: str, dest: str) -> None:
    """Copy an experiment's bookkeeping (study.json, Tune's experiment and trial state, results) from
    object storage to the local folder ``dest``; checkpoints, the prefix cache and the analysis stay."""
    fs, inner = _fs(root)
    inner = inner.rstrip("/")
    local = pyarrow.fs.LocalFileSystem()
    with reaching(root, "read the storage"):
        infos = fs.get_file_info(pyarrow.fs.FileSelector(inner, recursive=True))
    for info in infos:
        rel = info.path[len(inner):].lstrip("/")
        if info.type != pyarrow.fs.FileType.File or any(part.startswith(SKIPPED_IN_COPIES) for part in rel.split("/")):
            continue
        target = os.path.join(dest, *rel.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        pyarrow.fs.copy_files(info.path, target, source_filesystem=fs, destination_filesystem=local)


DONE_FILE = "done.json"  # in a trial directory: written once the trial has ended for good
LOCK_FILE = "driver.lock"  # in the study directory: the driver that runs it


def read_json(path: str) -> Any:
    """Parsed JSON at a local path or URI (raises OSError / ValueError)."""
    return json.loads(read_text(path))


def read_json_dict(path: str) -> dict[str, Any] | None:
    """The JSON object at ``path``, or None (missing, unreadable, not JSON, or not an object)."""
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def listdir(path: str) -> list[str]:
    """Names of the entries of a directory (empty if it does not exist)."""
    fs, inner = _fs(path)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(inner, allow_not_found=True))
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
