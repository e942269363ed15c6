"""Benchmark (not a test): what the frozen-prefix cache saves, measured in one process.

1. One training epoch, uncached vs cached, on the same config: the epoch time as metrics.csv
   records it (training pass plus validation), the best of ``--epochs`` epochs per run and of
   ``--rounds`` runs per path; the paths alternate (uncached, cached, uncached, ...) so that a
   shared machine's load falls on both alike.
2. The analysis of M checkpoints through the cache (prefix once, adapted part per checkpoint)
   vs one full inference pass (the best of two, one before and one after), and with
   ``--m-full-passes`` vs M full passes.
3. The size of the cached frozen state per image (the stream entering the first adapted block
   and that block's attention context; with vision_layers 1 at the class token only).

Defaults are the issue's CPU goal: ViT-B-32 at 224 px, 256 training images, vision_layers=2,
transformer_layers=1, batch 64. On a GPU: ``--backbone ViT-L/14 --n-train 1806``.

    python benchmarks/epoch_speed.py [--backbone ViT-B-32] [--n-train 256] [--checkpoints 10]

The last line reads ``epoch speedup (uncached/cached): N.NNx``. The "uncached" path is
``cache_frozen_prefix: false``: every block at every position on full-length prompts.
"""

from __future__ import annotations

import argparse
import csv
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hba_sweep.config import load_config, run_dir
from hba_sweep.model import ModelSpec
from hba_sweep.training import run_training_experiment
from hba_sweep.training.demo_data import make_demo_data
from hba_sweep.training.predict import Predictor


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="ViT-B-32")
    p.add_argument("--n-train", type=int, default=256, help="training images (the split's training part)")
    p.add_argument("--vision-layers", type=int, default=2)
    p.add_argument("--transformer-layers", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2, help="epochs timed per run (the best is kept)")
    p.add_argument("--rounds", type=int, default=2, help="runs per path, alternating (the best is kept)")
    p.add_argument("--checkpoints", type=int, default=10)
    p.add_argument("--m-full-passes", action="store_true", help="also time M full passes (slow)")
    p.add_argument("--analysis-only", action="store_true", help="skip the training epochs")
    p.add_argument("--adapter", default="hba_dora", choices=("hba_dora", "peft_dora"))
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's); 1 on a shared machine, where spin-waiting threads stall",
    )
    p.add_argument("--workdir", default=None, help="keep data and runs here (default: a temp dir)")
    return p.parse_args()


def image_size(backbone: str) -> int:
    from hba_sweep.model.backbones import backbone_config

    size = backbone_config(backbone)["vision_cfg"]["image_size"]
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def epoch_seconds(run: Path) -> list[float]:
    with open(run / "metrics.csv") as fh:
        return [float(r["epoch_seconds"]) for r in csv.DictReader(fh) if int(r["epoch"]) >= 0]


def time_training(base: Path, args: argparse.Namespace, cached: bool, round_: int) -> tuple[float, float]:
    """(best epoch seconds, total seconds including the prefix computation if not yet cached)."""
    n_total = round(args.n_train / 0.8)
    cfg = load_config(
        base / "train.yaml",
        {
            "backbone": args.backbone,
            "pretrained": "none",
            "vision_layers": args.vision_layers,
            "transformer_layers": args.transformer_layers,
            "batch_size": args.batch_size,
            "epochs": args.epochs,
            "train_portion": args.n_train / n_total,
            "behavioral_rsa": False,
            "device": args.device,
            "progress": False,
            "cache_frozen_prefix": cached,
            "save_path": str(base / f"{'cached' if cached else 'uncached'}{round_}-{args.precision}"),
            "cache_dir": str(base / "prefix_cache"),
            "rank": 32,
            "precision": args.precision,
            "adapter": args.adapter,
        },
    )
    started = time.perf_counter()
    run_training_experiment(cfg)
    return min(epoch_seconds(run_dir(cfg))), time.perf_counter() - started


def time_analysis(base: Path, args: argparse.Namespace) -> tuple[float, float, float]:
    """(one full inference pass, M checkpoints via the cache, M full passes) in seconds."""
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    spec = ModelSpec(
        backbone=args.backbone,
        pretrained="none",
        vision_layers=args.vision_layers,
        transformer_layers=args.transformer_layers,
        rank=32,
        adapter=args.adapter,
    )
    predictor = Predictor(
        spec, device, cache_root=base / "analysis_cache", batch_size=args.batch_size, precision=args.precision
    )
    paths = sorted((base / "images").iterdir())
    torch.manual_seed(0)
    checkpoints = [
        {k: v + 0.01 * torch.randn_like(v) for k, v in predictor.model.adapter_state_dict().items()}
        for _ in range(args.checkpoints)
    ]

    def full_pass(adapters: dict) -> None:
        from hba_sweep.data.images import ImageStore

        predictor.load(adapters)
        store = ImageStore(paths, predictor.model.image_size, in_memory=False)
        with torch.no_grad(), predictor._autocast():
            for start in range(0, len(paths), args.batch_size):
                predictor.model(store.batch(range(start, min(len(paths), start + args.batch_size))).to(device))

    def timed(fn) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    one_full = timed(lambda: full_pass(checkpoints[0]))
    cached = timed(lambda: [predictor.load(a) or predictor.predict(paths) for a in checkpoints])
    one_full = min(one_full, timed(lambda: full_pass(checkpoints[0])))
    all_full = timed(lambda: [full_pass(a) for a in checkpoints]) if args.m_full_passes else float("nan")
    return one_full, cached, all_full


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.workdir or tmp)
        n_total = round(args.n_train / 0.8)
        print(f"generating {n_total} images at {image_size(args.backbone)} px in {base} ...", flush=True)
        make_demo_data(base, n_train=n_total, image_size=image_size(args.backbone))
        device = "cuda" if torch.cuda.is_available() and args.device in ("auto", "cuda") else "cpu"
        print(
            f"device {device}, torch threads {torch.get_num_threads()}, backbone {args.backbone}, "
            f"{args.n_train} training images, vision_layers {args.vision_layers}, "
            f"transformer_layers {args.transformer_layers}, batch {args.batch_size}",
            flush=True,
        )
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        runs = {False: [], True: []}
        for round_ in range(0 if args.analysis_only else args.rounds):
            for cached in (False, True):
                runs[cached].append(time_training(base, args, cached, round_))
                print(
                    f"round {round_} {'cached' if cached else 'uncached'}: best epoch {runs[cached][-1][0]:.2f} s",
                    flush=True,
                )
        if not args.analysis_only:
            uncached, cached = min(r[0] for r in runs[False]), min(r[0] for r in runs[True])
            print(f"epoch uncached: {uncached:.2f} s ({args.n_train / uncached:.1f} images/s)")
            print(
                f"epoch cached:   {cached:.2f} s ({args.n_train / cached:.1f} images/s); first run totals "
                f"{runs[False][0][1]:.1f} s vs {runs[True][0][1]:.1f} s including the one-off prefix"
            )
        one_full, m_cached, m_full = time_analysis(base, args)
        m = args.checkpoints
        full_note = (
            f"; {m} full passes {m_full:.2f} s ({m_full / m_cached:.2f}x slower than cached)"
            if args.m_full_passes
            else ""
        )
        print(
            f"analysis: one full inference pass {one_full:.2f} s; {m} checkpoints via the cache {m_cached:.2f} s "
            f"({m_cached / one_full:.2f}x one full pass){full_note}"
        )
        if args.analysis_only:
            return
        entries = sorted((base / "prefix_cache").glob("prefix-*.npy"))
        if entries:  # the frozen state per image (stream, and the first adapted block's attention context)
            shape = np.load(entries[0], mmap_mode="r").shape
            print(f"frozen state per image: {math.prod(shape[1:]) * 4 / 1024:.0f} KiB fp32, shape {shape[1:]}")
        if device == "cuda":
            print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
        print(f"epoch speedup (uncached/cached): {uncached / cached:.2f}x")


if __name__ == "__main__":
    main()
