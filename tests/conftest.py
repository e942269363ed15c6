"""Shared fixtures: generated demo data (once per session) and the reference-data folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

# Tiny models gain nothing from intra-op threads, and on a shared 2-core machine OpenMP
# spin-waiting makes them many times slower: one thread per test process.
torch.set_num_threads(1)

# The node's memo of file digests: one per test session, not the user's ~/.cache (Ray workers inherit it).
os.environ.setdefault("HBA_SWEEP_HASH_MEMO", os.path.join(tempfile.mkdtemp(prefix="hba_hash_memo_"), "memo.sqlite"))

REFERENCE_DATA = Path(__file__).resolve().parents[2] / "shared" / "reference-data"


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo data set in the published formats (hba-tiny, 64 px)."""
    from hba_sweep.training.demo_data import make_demo_data

    root = tmp_path_factory.mktemp("demo")
    make_demo_data(root)
    return root


@pytest.fixture()
def demo_config(demo_dir: Path, tmp_path: Path):
    """A factory of demo TrainConfigs saving under this test's tmp dir."""
    from hba_sweep.config import load_config

    def make(**overrides):
        values = {"save_path": str(tmp_path / "runs"), "progress": False, "epochs": 4, **overrides}
        return load_config(demo_dir / "train.yaml", values)

    return make


@pytest.fixture()
def reference_data() -> Path:
    if not REFERENCE_DATA.is_dir():
        pytest.skip(f"reference data not found at {REFERENCE_DATA} (the steering repo's shared/ is absent)")
    return REFERENCE_DATA


SMALL_ROWS = 40  # training rows of the tiny runs below (keeps them fast)


def write_small_run_config(demo_dir: Path, root: Path, run_name: str) -> tuple[Path, dict, Path]:
    """A one-epoch config on the first SMALL_ROWS demo training rows, saving under root/results.

    Returns (config path, its values, the small training CSV).
    """
    import yaml

    from hba_sweep.config import PATH_FIELDS

    lines = (demo_dir / "train.csv").read_text().splitlines(keepends=True)
    small_csv = root / "small_train.csv"
    small_csv.write_text("".join(lines[: SMALL_ROWS + 1]))
    base = yaml.safe_load((demo_dir / "train.yaml").read_text())
    for key in PATH_FIELDS:
        base[key] = str(demo_dir / base[key])
    base.update(
        img_annotations_file=str(small_csv),
        epochs=1,
        batch_size=8,
        save_path=str(root / "results"),
        progress=False,
        run_name=run_name,
    )
    config = root / f"{run_name}.yaml"
    config.write_text(yaml.safe_dump(base))
    return config, base, small_csv


def rewrite_same_size(image: Path) -> None:
    """Another picture in the same file: a valid PNG padded to the old size, the old mtime put back."""
    import io

    from PIL import Image, ImageOps

    st = image.stat()
    out = io.BytesIO()
    ImageOps.invert(Image.open(image).convert("RGB")).save(out, format="PNG", compress_level=9)
    data = out.getvalue()
    assert len(data) <= st.st_size
    image.write_bytes(data + b"\0" * (st.st_size - len(data)))  # bytes after IEND are not read
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert image.stat().st_size == st.st_size and image.stat().st_mtime_ns == st.st_mtime_ns
