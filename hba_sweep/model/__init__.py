"""Model layer: backbones and their weights, the adapters, the readout, CLIP-HBA itself, the model
spec with its forward plan, and the one factory (``create_model``)."""

from hba_sweep.model.cliphba import CLIPHBA, load_prompts
from hba_sweep.model.factory import create_model
from hba_sweep.model.spec import MODEL_FIELDS, ForwardPlan, ModelSpec

__all__ = ["CLIPHBA", "ForwardPlan", "MODEL_FIELDS", "ModelSpec", "create_model", "load_prompts"]
