"""hba_sweep: Ray Tune sweeps and analysis for CLIP-HBA perturbation experiments."""

__version__ = "0.1.0"
