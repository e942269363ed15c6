"""Model layer: backbones and their weights, the adapters, the readout and CLIP-HBA itself."""

from hba_sweep.model.cliphba import CLIPHBA, load_prompts

__all__ = ["CLIPHBA", "load_prompts"]
