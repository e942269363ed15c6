"""``demo-data DIR``: write (or reuse) the demo data and say what is there."""

from __future__ import annotations

import argparse
from pathlib import Path

from hba_sweep.training.demo_data import describe, existing_settings, make_demo_data


def demo_data_command(args: argparse.Namespace) -> int:
    """`demo-data DIR`: write (or reuse) the demo data and say what is there."""
    out_dir = Path(args.dir)
    existed = existing_settings(out_dir) is not None
    train_yaml = make_demo_data(
        out_dir,
        n_train=args.n_train,
        image_size=args.image_size,
        seed=args.seed,
        backbone=args.backbone,
        force=args.force,
    )
    verb = "regenerated" if existed and args.force else ("reused existing" if existed else "wrote")
    print(f"{verb} demo data in {out_dir}:\n{describe(out_dir)}")
    print(f"next: python -m hba_sweep train --config {train_yaml}")
    return 0
