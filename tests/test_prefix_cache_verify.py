"""The frozen-prefix cache is verified: a garbled, truncated, empty or garbage entry is recomputed
(never used, never a traceback), another format version is refused with the folder named, and the
full hash is taken once per node and entry, not per trial."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import rewrite_same_size, write_small_run_config

from hba_sweep import cli
from hba_sweep.foundation.errors import CacheError
from hba_sweep.training import prefix_cache as pc

VALUES = torch.arange(4 * 5 * 6, dtype=torch.float32).reshape(4, 5, 6) / 7


class Counter:
    def __init__(self) -> None:
        self.computed = 0

    def __call__(self) -> torch.Tensor:
        self.computed += 1
        return VALUES.clone()


def load(root: Path, compute: Counter, dtype=torch.float32) -> torch.Tensor:
    return pc.load_or_compute(root, "entry", compute, dtype, log=lambda m: None).rows(range(4))


def garble_in_place(path: Path, offset: int = -16) -> None:
    """Overwrite 8 bytes of the array data; same size, mtime put back as it was."""
    st = os.stat(path)
    with open(path, "r+b") as fh:
        fh.seek(offset, os.SEEK_END)
        fh.write(np.array([1e30], dtype=np.float64).tobytes())
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("damage", ["garbled", "truncated", "empty", "garbage", "record-missing", "record-garbage"])
def test_damaged_entry_is_recomputed_not_used(tmp_path, damage):
    compute = Counter()
    assert torch.equal(load(tmp_path, compute), VALUES) and compute.computed == 1
    entry, record = tmp_path / "entry.npy", tmp_path / "entry.json"
    if damage == "garbled":
        garble_in_place(entry)
    elif damage == "truncated":
        entry.write_bytes(entry.read_bytes()[:100])
    elif damage == "empty":
        entry.write_bytes(b"")
    elif damage == "garbage":
        entry.write_bytes(os.urandom(entry.stat().st_size))
    elif damage == "record-missing":
        record.unlink()
    else:
        record.write_text("{not json")
    messages = []

    out = pc.load_or_compute(tmp_path, "entry", compute, torch.float32, log=messages.append).rows(range(4))

    assert torch.equal(out, VALUES) and compute.computed == 2
    assert len(messages) == 1 and str(entry) in messages[0] and "recomputing" in messages[0]
    assert torch.equal(load(tmp_path, compute), VALUES) and compute.computed == 2  # repaired for good


def test_full_hash_once_per_node_and_entry(tmp_path, monkeypatch):
    hashed = []
    real = pc.file_sha256
    monkeypatch.setattr(pc, "file_sha256", lambda path: hashed.append(path) or real(path))
    compute = Counter()
    load(tmp_path, compute)  # written: hashed while writing, marked verified
    load(tmp_path, compute)
    assert hashed == [] and compute.computed == 1
    (tmp_path / "entry.verified.json").unlink()  # another node sharing the folder
    load(tmp_path, compute)
    load(tmp_path, compute)
    assert len(hashed) == 1 and compute.computed == 1
    garble_in_place(tmp_path / "entry.npy")  # written since: ctime moved, so it is hashed again
    assert torch.equal(load(tmp_path, compute), VALUES) and len(hashed) == 2 and compute.computed == 2


def test_bf16_entry_verified_too(tmp_path):
    compute = Counter()
    first = load(tmp_path, compute, torch.bfloat16)
    garble_in_place(tmp_path / "entry.npy")
    assert torch.equal(load(tmp_path, compute, torch.bfloat16), first) and compute.computed == 2


def test_entry_of_another_format_version_is_refused(tmp_path):
    compute = Counter()
    load(tmp_path, compute)
    record = tmp_path / "entry.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "format": pc.FORMAT_VERSION + 1}))
    with pytest.raises(CacheError, match=rf"{tmp_path}.*another version.*Fix: delete the folder {tmp_path}"):
        load(tmp_path, compute)
    assert compute.computed == 1 and (tmp_path / "entry.npy").is_file()  # left for the version that wrote it


def test_garbled_cache_does_not_change_a_later_run(demo_dir, tmp_path, capsys):
    """The reported fault: garbling a cache entry in place changed every later trial's numbers, exit 0."""
    config, _, _ = write_small_run_config(demo_dir, tmp_path, "first")
    assert cli.main(["train", "--config", str(config)]) == 0
    entries = sorted((tmp_path / "results" / "prefix_cache").glob("*.npy"))
    assert entries
    for entry in entries:
        garble_in_place(entry, offset=-(entry.stat().st_size // 2))
    capsys.readouterr()

    assert cli.main(["train", "--config", str(config), "--set", "run_name=second"]) == 0

    assert "is damaged" in capsys.readouterr().err
    first, second = (pd.read_csv(tmp_path / "results" / name / "metrics.csv") for name in ("first", "second"))
    columns = ["train_loss", "val_loss", "behavioral_rsa_rho"]
    pd.testing.assert_frame_equal(first[columns], second[columns])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prefix_held_on_a_device_gives_the_same_rows(tmp_path, dtype):
    """A prefix copied whole to a device (in chunks: here one row each) gathers the very rows the memory
    map gives, in any order and with repeats; a row changed by the caller (a replaced image) leaves the
    held copy alone. On the CPU nothing is copied."""
    values = (torch.randn(7, 2, 3, 4) * 10).to(dtype)
    cached = pc.load_or_compute(tmp_path, "entry", lambda: values.clone(), dtype, log=lambda m: None)
    held = pc.copy_whole(cached, torch.device("cpu"), chunk_bytes=1)
    order = torch.tensor([6, 0, 3, 3, 1])
    rows = held.rows(order)
    assert rows.dtype == dtype and torch.equal(rows, cached.rows(order)) and torch.equal(rows, values[order])
    assert len(held) == 7 and torch.equal(held.rows(range(7)), values)
    rows[0] = 0
    assert torch.equal(held.rows([6]), values[[6]])
    assert pc.hold_on_device(cached, torch.device("cpu")) is cached


def test_image_changed_in_place_recomputes_its_features(demo_dir, tmp_path, capsys):
    """The key is the images' content: an image rewritten with its size and mtime kept is not served the
    features of its old content, and the line names it."""
    import shutil

    data = Path(shutil.copytree(demo_dir, tmp_path / "data"))
    config, _, _ = write_small_run_config(data, tmp_path, "first")
    loud = ["--set", "progress=true"]
    assert cli.main(["train", "--config", str(config), *loud]) == 0
    assert "computing the frozen prefix" in capsys.readouterr().err
    assert cli.main(["train", "--config", str(config), *loud, "--set", "run_name=again"]) == 0
    assert "computing the frozen prefix" not in capsys.readouterr().err  # unchanged images: served from the cache
    image = data / "images" / pd.read_csv(tmp_path / "small_train.csv")["image_name"][0]
    rewrite_same_size(image)
    assert cli.main(["train", "--config", str(config), *loud, "--set", "run_name=changed"]) == 0
    err = capsys.readouterr().err
    assert "computing the frozen prefix" in err and "1 image(s) changed" in err and str(image) in err
