"""``infer --config X.yaml``: evaluate a run's checkpoint(s) and write one JSON result per epoch."""

from __future__ import annotations

import argparse

from hba_sweep.artifacts.resolve import checkpoint_dirs, read_meta
from hba_sweep.config.infer_config import load_infer_config
from hba_sweep.training.inference import predictor_for, run_inference, write_result


def infer_command(args: argparse.Namespace) -> int:
    """`infer --config`: one JSON per evaluated epoch."""
    cfg = load_infer_config(args.config, args.overrides)
    if args.device:
        cfg["device"] = args.device
    dirs = checkpoint_dirs(cfg["model_weights_path"], cfg["epoch"])
    predictor = predictor_for(cfg, read_meta(dirs[0]))  # one model and prefix for every epoch
    for ckpt_dir in dirs:
        result = run_inference(cfg, predictor, ckpt_dir)
        path = write_result(result, cfg)
        summary = ", ".join(f"{r['reference']} {r['metric']} {r['value']:.4f}" for r in result["results"])
        print(f"epoch {result['epoch']}: {summary} -> {path}")
    return 0
