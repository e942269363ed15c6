"""Training layer: one run without Ray (loop, run_start, split, prefix_cache), inference and
scoring (inference: Predictor and run_inference; scoring: evaluation sets and their scorers), and
the demo-data generator (demo_data: it writes a ready train.yaml and infer.yaml, so it sits above
the config layer).

Public entry points: ``run_training_experiment(config, report=None)`` and
``run_inference(config, predictor=None, checkpoint_dir=None)``.
"""

from hba_sweep.training.inference import run_inference
from hba_sweep.training.loop import run_training_experiment

__all__ = ["run_training_experiment", "run_inference"]
