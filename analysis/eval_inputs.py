"""The content of an evaluation set's files, in its cache key and on record next to the cache.

An evaluation's key (``evaluations.parquet``'s ``eval_key``) covers its settings and the SHA-256 of
every file it reads (tables, reference RDMs, images; :mod:`hba_sweep.foundation.content_hash`, each file
hashed once per node while unchanged), not their size and mtime: a file rewritten in place with its
size and mtime kept is evaluated again, a file merely touched is not. ``evaluation_inputs.json`` records
the digests each dataset was last evaluated with, so a changed file is named when its rows are recomputed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hba_sweep.foundation import content_hash
from hba_sweep.foundation.io_utils import atomic_write_text
from hba_sweep.training.scoring import EvalSet

RECORD_FILE = "evaluation_inputs.json"
SHOWN = 3  # changed files named in a line; the rest counted


def file_digests(es: EvalSet) -> dict[str, str]:
    """Path -> SHA-256 of every file the evaluation set reads: its tables and references, then its images."""
    files = [*dict.fromkeys([*(es.settings.get("files") or {}), *(str(p) for p in es.paths)])]
    return dict(zip(files, content_hash.file_digests(files), strict=True))


def content_key(es: EvalSet, digests: dict[str, str], extra: str) -> str:
    """The evaluation's cache key: dataset, settings (not the files' stat stamps), file digests, ``extra``."""
    settings = {k: v for k, v in es.settings.items() if k != "files"}
    text = json.dumps([es.dataset, settings, sorted(digests.items())], sort_keys=True, default=str)
    return hashlib.sha256(f"{text}|{extra}".encode()).hexdigest()[:16]


def read_record(out_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((out_dir / RECORD_FILE).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def changed_lines(out_dir: Path, evaluations: Sequence[Any], cached_keys: set[str]) -> list[str]:
    """One line per evaluation not in the cache because files it read changed since it was last evaluated."""
    record = read_record(out_dir)
    lines = []
    for ev in evaluations:
        before = record.get(ev.evalset.dataset) or {}
        old = before.get("files") or {}
        if ev.key in cached_keys or before.get("key") not in cached_keys:
            continue
        changed = content_hash.changed_files(old, ev.files)
        if not changed:
            continue
        named = ", ".join(f"{p} (sha256 {old[p][:12]} -> {ev.files[p][:12]})" for p in changed[:SHOWN])
        more = f" and {len(changed) - SHOWN} more file(s)" if len(changed) > SHOWN else ""
        lines.append(f"{ev.evalset.dataset}: {named}{more} changed since it was evaluated; its rows are recomputed")
    return lines


def write_record(out_dir: Path, evaluations: Sequence[Any]) -> None:
    """Record the digests each dataset was evaluated with (kept for datasets not evaluated this time)."""
    record = read_record(out_dir)
    record.update({ev.evalset.dataset: {"key": ev.key, "files": ev.files} for ev in evaluations})
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / RECORD_FILE, json.dumps(record, indent=1, sort_keys=True))
