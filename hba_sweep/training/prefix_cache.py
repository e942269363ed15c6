"""The frozen-prefix cache: per image, what the adapted vision blocks start from.

The blocks before the first adapter never change and no augmentation is applied, so their
output per image is the same in every epoch, trial and checkpoint of a study (DESIGN.md,
trap 4); so is the first adapted block's attention before ``out_proj``, which is stored with it
(``CLIPHBA.vision_prefix``: the stream and that context, or both at the class token only). They
are computed once and stored as ``<root>/<key>.npy``; every process on a node memory-maps the
same file (no copy per trial; on a GPU a trial may hold it whole in GPU memory,
``hold_on_device``). The key covers the backbone, its weights, the layer split and state layout,
the image size, the image set (the content of each image, in order) and the dtype; an image whose
content changed (even with its size and mtime kept) gives another key, and the line that says so. A file lock makes
concurrent trials compute a missing entry once.

Each entry is verified before use. Writing it records ``<key>.json`` (cache format version, shape,
dtype, size and SHA-256 of the ``.npy`` file), atomically, after the array. A full SHA-256 pass
costs several epochs' worth of reading the cache (sha256 runs at a fraction of memory-read speed),
so it is done once per node and entry: a successful check writes ``<key>.verified.json`` keyed by
the file's inode, size, mtime and ctime (ctime changes with any write, even one that restores
the mtime), and later trials whose stat matches skip the re-hash. A missing, truncated, garbled
or unreadable entry (or record) is recomputed; an entry written by another cache format version
is refused with the folder named, since another version of the tool may be using it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from hba_sweep.foundation import content_hash
from hba_sweep.foundation.errors import CacheError
from hba_sweep.foundation.io_utils import atomic_write, atomic_write_text, file_sha256
from hba_sweep.foundation.safe_paths import make_dirs

_STORAGE = {torch.float32: (np.float32, None), torch.bfloat16: (np.int16, torch.bfloat16)}
FORMAT_VERSION = 1  # of the entry files (.npy + .json record); another version's entries are refused


def image_set_fingerprint(digests: Sequence[str], image_size: int) -> str:
    """Identifies an ordered image set at one resolution by content: the SHA-256 of each file, in order
    (:func:`hba_sweep.foundation.content_hash.file_digests`)."""
    digest = hashlib.sha256(f"size={image_size}".encode())
    for sha in digests:
        digest.update(f"|{sha}".encode())
    return digest.hexdigest()[:16]


def _last_path(root: str | os.PathLike, paths: Sequence[str], prefix_key: str, dtype: torch.dtype) -> Path:
    """Where the digests of the last entry computed for these image paths are kept."""
    where = hashlib.sha256("|".join([prefix_key, str(dtype), *map(os.path.abspath, paths)]).encode())
    return Path(root) / f"images-{where.hexdigest()[:16]}.json"


def changed_images(
    root: str | os.PathLike | None, digests: dict[str, str], prefix_key: str, dtype: torch.dtype, key: str
) -> str:
    """A line naming the images whose content changed since an entry was last computed for these paths
    (``digests``: path -> SHA-256; '' when none was, or it is this entry); records them for the next time."""
    if root is None:
        return ""
    record = _last_path(root, list(digests), prefix_key, dtype)
    last = _read_json(record)
    if last is not None and last.get("key") == key:
        return ""
    make_dirs(record.parent)
    atomic_write_text(record, json.dumps({"key": key, "digests": digests}))
    if last is None:
        return ""
    changed = content_hash.changed_files(last.get("digests") or {}, digests)
    if not changed:
        return ""
    return (
        f"prefix cache: {len(changed)} image(s) changed since their features were cached "
        f"({', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''}): recomputing"
    )


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    make_dirs(path.parent)  # never through a symlinked folder below a registered root
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class CachedPrefix:
    """Row access to a cached prefix array; ``rows(idx)`` returns a fresh torch tensor."""

    def __init__(self, array: np.ndarray, view_as: torch.dtype | None) -> None:
        self.array = array
        self.view_as = view_as

    def __len__(self) -> int:
        return self.array.shape[0]

    def rows(self, indices: torch.Tensor | Sequence[int]) -> torch.Tensor:
        idx = np.asarray(indices, dtype=np.int64)
        out = torch.from_numpy(np.ascontiguousarray(self.array[idx]))
        return out.view(self.view_as) if self.view_as is not None else out


class DevicePrefix:
    """A cached prefix held whole in one device's memory: ``rows`` gathers there (no host copies)."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def rows(self, indices: torch.Tensor | Sequence[int]) -> torch.Tensor:
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64)).to(self.tensor.device)
        return self.tensor.index_select(0, idx)


def copy_whole(prefix: CachedPrefix, device: torch.device, chunk_bytes: int = 256 << 20) -> DevicePrefix:
    """``prefix`` copied to ``device`` in chunks (the memory map is never read whole into host memory)."""
    array = prefix.array
    out = torch.empty(array.shape, dtype=torch.from_numpy(np.empty(0, array.dtype)).dtype, device=device)
    step = max(1, chunk_bytes // max(1, array[:1].nbytes))
    for start in range(0, len(array), step):  # np.array: a writable copy of the read-only map's rows
        out[start : start + step].copy_(torch.from_numpy(np.array(array[start : start + step])))
    return DevicePrefix(out.view(prefix.view_as) if prefix.view_as is not None else out)


def hold_on_device(
    prefix: CachedPrefix, device: torch.device, share: float = 0.5, log: Callable[[str], None] | None = None
) -> CachedPrefix | DevicePrefix:
    """On a CUDA ``device``, ``prefix`` held in GPU memory when it takes at most ``share`` of the memory
    free now (each epoch then reads no host memory); otherwise, and on the CPU, ``prefix`` itself."""
    if device.type != "cuda":
        return prefix
    size, (free, _) = prefix.array.nbytes, torch.cuda.mem_get_info(device)
    if size > share * free:
        if log:
            log(
                f"frozen prefix ({size / 2**30:.2f} GiB) stays in host memory: over {share:.0%} of the "
                f"{free / 2**30:.1f} GiB free on {device}"
            )
        return prefix
    if log:
        log(f"frozen prefix ({size / 2**30:.2f} GiB) held in {device} memory")
    return copy_whole(prefix, device)


def compute_prefix(
    prefix_fn: Callable[[torch.Tensor], torch.Tensor],
    batches: Callable[[Sequence[int]], torch.Tensor],
    n: int,
    dtype: torch.dtype,
    device: torch.device,
    batch_size: int,
) -> torch.Tensor:
    """Run the frozen prefix over images 0..n-1 in batches; result on CPU in ``dtype``."""
    parts = []
    for start in range(0, n, batch_size):
        images = batches(range(start, min(n, start + batch_size))).to(device, non_blocking=True)
        parts.append(prefix_fn(images).to("cpu", dtype))
    return torch.cat(parts)


class _HashingWriter:
    """A write-only file object that hashes what passes through (np.save writes in chunks)."""

    def __init__(self, fh) -> None:
        self.fh, self.digest, self.size = fh, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.digest.update(data)
        self.size += len(memoryview(data).cast("B"))
        return self.fh.write(data)


def _identity(path: Path) -> dict[str, int]:
    """What changes when the file is replaced or written to (ctime: even if the mtime is restored)."""
    st = os.stat(path)
    return {"inode": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _paths(path: Path) -> tuple[Path, Path]:
    """(record, verified marker) of the entry ``path`` (``<key>.npy``)."""
    return path.with_suffix(".json"), path.with_name(f"{path.stem}.verified.json")


def entry_problem(path: Path, np_dtype: type) -> str:
    """Why the entry at ``path`` cannot be used ('' if it can); CacheError for another format version."""
    record_path, marker_path = _paths(path)
    if not path.is_file():
        return "missing"
    record = _read_json(record_path)
    if record is None:
        return f"{record_path.name} is missing or unreadable (no hash recorded)"
    if record.get("format") != FORMAT_VERSION:
        raise CacheError(
            f"{path}: written by another version of hba_sweep (cache format {record.get('format')!r}, "
            f"this version reads {FORMAT_VERSION}). Fix: delete the folder {path.parent} (entries are "
            "recomputed), or give this version its own cache_dir."
        )
    if os.path.getsize(path) != record.get("size"):
        return f"size {os.path.getsize(path)} bytes, recorded {record.get('size')} (truncated or replaced)"
    identity = _identity(path)
    marker = _read_json(marker_path)
    if marker == {**identity, "sha256": record.get("sha256")}:
        return ""  # verified on this node since its last change
    if file_sha256(path) != record.get("sha256"):
        return "its content does not match the recorded SHA-256 (changed since it was written)"
    try:
        array = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as exc:
        return f"not a readable .npy file ({exc})"
    if list(array.shape) != record.get("shape") or array.dtype != np.dtype(np_dtype):
        return f"shape {array.shape} / dtype {array.dtype} differ from the record"
    try:
        atomic_write_text(marker_path, json.dumps({**identity, "sha256": record["sha256"]}))
    except OSError:
        pass  # not recorded: the next trial hashes it again
    return ""


def _store(path: Path, array: np.ndarray) -> None:
    """The .npy file, then its record (hash taken while writing), then this node's verified marker."""
    record_path, marker_path = _paths(path)
    for stale in (record_path, marker_path):
        stale.unlink(missing_ok=True)
    written: dict = {}

    def write(fh) -> None:
        hashing = _HashingWriter(fh)
        np.save(hashing, array)
        written.update(sha256=hashing.digest.hexdigest(), size=hashing.size)

    atomic_write(path, write)
    atomic_write_text(
        record_path,
        json.dumps({"format": FORMAT_VERSION, "shape": list(array.shape), "dtype": str(array.dtype), **written}),
    )
    atomic_write_text(marker_path, json.dumps({**_identity(path), "sha256": written["sha256"]}))


def load_or_compute(
    root: str | os.PathLike | None,
    key: str,
    compute: Callable[[], torch.Tensor],
    dtype: torch.dtype,
    log: Callable[[str], None] | None = None,
) -> CachedPrefix:
    """The cached prefix for ``key``: memory-mapped from ``root`` if there and verified, else computed
    (and stored with its hash); a damaged entry is recomputed and said (to ``log``, else stderr)."""
    np_dtype, view_as = _STORAGE[dtype]
    if root is None:
        tensor = compute()
        return CachedPrefix(tensor.view(torch.int16).numpy() if view_as else tensor.numpy(), view_as)
    path = Path(root) / f"{key}.npy"
    with _locked(path.with_suffix(".lock")):
        problem = entry_problem(path, np_dtype)
        if problem:
            if problem != "missing":
                message = f"prefix cache entry {path} is damaged ({problem}): recomputing it"
                (log or (lambda m: print(f"[hba_sweep] {m}", file=sys.stderr, flush=True)))(message)
            tensor = compute()
            array = tensor.view(torch.int16).numpy() if view_as else tensor.numpy()
            _store(path, array.astype(np_dtype, copy=False))
    return CachedPrefix(np.load(path, mmap_mode="r"), view_as)


def cache_key(prefix_key: str, fingerprint: str, dtype: torch.dtype) -> str:
    return f"prefix-{prefix_key}-{fingerprint}-{str(dtype).removeprefix('torch.')}"


def frozen_prefix(
    model: torch.nn.Module,
    paths: Sequence[str | os.PathLike],
    make_batches: Callable[[], Callable[[Sequence[int]], torch.Tensor]],
    root: str | os.PathLike | None,
    dtype: torch.dtype,
    device: torch.device,
    batch_size: int,
    autocast: Callable[[], object],
    on_compute: Callable[[int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> CachedPrefix:
    """The frozen vision prefix of the images at ``paths`` for a CLIPHBA ``model``: loaded from
    ``root`` when an entry with the same key exists, else computed once and stored.

    ``make_batches()`` returns the function giving normalised images by index (called only
    when computing, so cached image sets are not decoded); ``autocast()`` gives the precision
    context; ``on_compute(n)`` is told when n images are run (a log line, a counter); ``log`` when a
    damaged entry is recomputed.
    """
    digests = content_hash.file_digests(paths)
    prefix_key = model.prefix_key()
    key = cache_key(prefix_key, image_set_fingerprint(digests, model.image_size), dtype)
    changed = changed_images(root, dict(zip(map(str, paths), digests, strict=True)), prefix_key, dtype, key)
    if changed:
        (log or (lambda m: print(f"[hba_sweep] {m}", file=sys.stderr, flush=True)))(changed)

    def compute() -> torch.Tensor:
        if on_compute is not None:
            on_compute(len(paths))
        with autocast():
            return compute_prefix(model.vision_prefix, make_batches(), len(paths), dtype, device, batch_size)

    return load_or_compute(root, key, compute, dtype, log)
