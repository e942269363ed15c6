"""What hashing a trial's input files costs: the demo data and a 1806-image set (THINGS-sized JPEGs).

For each: the first look on a node (every file read and hashed), a later process on the same node
(the node's memo: one stat and one lookup per file) and a trial's identity in the same process (one
stat per file). Prints seconds; asserts nothing.

    python benchmarks/content_hashing.py [--images 1806] [--size 500]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from hba_sweep.artifacts.identity import trial_identity
from hba_sweep.config import load_config
from hba_sweep.foundation import content_hash
from hba_sweep.training.demo_data import make_demo_data

PROBE = (
    "import time,sys;from hba_sweep.config import load_config;from hba_sweep.artifacts.identity import trial_identity;"
    "t=time.perf_counter();trial_identity(load_config(sys.argv[1]).to_dict());print(time.perf_counter()-t)"
)


def things_sized(root: Path, n: int, size: int) -> Path:
    """n JPEGs of size x size (smooth noise, ~THINGS file sizes), a THINGS CSV and a config naming them."""
    demo = root / "demo"
    make_demo_data(demo)
    images = root / "things_images"
    images.mkdir()
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        small = rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size, size), Image.BILINEAR).save(images / f"img_{i:04d}.jpg", quality=90)
        names.append(f"img_{i:04d}.jpg")
    targets = rng.random((n, 66))
    csv = root / "things.csv"
    csv.write_text(
        "image_name,"
        + ",".join(str(k) for k in range(66))
        + "\n"
        + "\n".join(f"{name}," + ",".join(f"{v:.5f}" for v in row) for name, row in zip(names, targets, strict=True))
    )
    text = (demo / "train.yaml").read_text().replace("img_dir: images", f"img_dir: {images}")
    config = demo / "things.yaml"
    config.write_text(text.replace("img_annotations_file: train.csv", f"img_annotations_file: {csv}"))
    return config


def measure(label: str, config: Path) -> None:
    content_hash.forget()
    values = load_config(config).to_dict()
    t = time.perf_counter()
    first = trial_identity(values)
    cold = time.perf_counter() - t
    t = time.perf_counter()
    trial_identity(values)
    warm = time.perf_counter() - t
    node = float(subprocess.run([sys.executable, "-c", PROBE, str(config)], capture_output=True, text=True).stdout)
    files = sum(e.get("files", 1) for e in first.inputs.values())
    mb = sum(os.path.getsize(p) for p in Path(values["img_dir"]).iterdir()) / 2**20
    print(
        f"{label:<22} {files:>5} files ({mb:6.1f} MiB of images): first look {cold:6.3f} s, "
        f"a later process on the node {node:6.3f} s, again in the process {warm:6.4f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1806)
    parser.add_argument("--size", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hba_hash_bench_") as tmp:
        root = Path(tmp)
        os.environ[content_hash.MEMO_ENV] = str(root / "memo.sqlite")
        config = things_sized(root, args.images, args.size)
        measure("demo data", root / "demo" / "train.yaml")
        measure(f"{args.images} images {args.size}px", config)


if __name__ == "__main__":
    main()
