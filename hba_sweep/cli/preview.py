"""``preview --config X.yaml --perturb-type T``: one training batch before and after a perturbation, as a PNG."""

from __future__ import annotations

import argparse
from typing import Any

from hba_sweep.cli.arguments import add_command, add_overrides


def add_preview_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``preview --config X.yaml --perturb-type T [--epoch E] [--batch B] [--out P.png] [--space S.py]``."""
    p = add_command(
        subparsers,
        "preview",
        preview_command,
        "Draw the training batch a run sees at an epoch, before and after its perturbation (images "
        "as a grid, targets as a 66-column heatmap), with the product's strategy, seeds and batch "
        "order; print which rows, images and targets changed.",
    )
    p.add_argument("--config", required=True, help="a training config YAML (e.g. from `demo-data DIR`)")
    p.add_argument(
        "--perturb-type",
        required=True,
        metavar="TYPE",
        help="a built-in type (label_shuffle, random_target, image_noise, uniform_images, blank_target, "
        "none) or one a --space file registers",
    )
    p.add_argument("--epoch", type=int, help="the epoch to look at (default: the window's first, perturb_epoch)")
    p.add_argument("--batch", type=int, default=0, help="the batch of that epoch (default 0)")
    add_overrides(p, "override a config key, e.g. --set perturb_epoch=3 --set perturb_fraction=0.5")
    p.add_argument(
        "--space",
        metavar="SPACE.py",
        help="a Python search-space file that registers custom perturbation types (it is executed)",
    )
    p.add_argument("--out", help="the PNG to write (default: preview_<TYPE>_e<EPOCH>.png here)")
    return p


def preview_command(args: argparse.Namespace) -> int:
    from hba_sweep.config import load_config  # reason: torch loads when preview runs, not for --help
    from hba_sweep.training.preview import draw, preview  # reason: torch and matplotlib load when preview runs

    if args.space:  # registers the file's @register types; its trials are not needed
        from hba_sweep.sweep.spec import load_search_space  # reason: Ray loads only when a --space is given

        load_search_space(args.space)
    cfg = load_config(args.config, [f"perturb_type={args.perturb_type}", *args.overrides])
    result = preview(cfg, args.epoch, args.batch)
    out = draw(result, args.out or f"preview_{cfg.perturb_type}_e{result.epoch}.png")
    for line in result.summary():
        print(line)
    print(f"picture: {out}")
    return 0
