"""The one door that builds CLIP-HBA: ``create_model(spec, plan)`` (as open_clip's ``create_model``).

Training (``TrainConfig.model_spec``), inference and the analysis (a checkpoint's recorded config
read with ``ModelSpec.from_mapping``) all build their network here, with the cached-path plan
decided at construction.
"""

from __future__ import annotations

from hba_sweep.model.cliphba import CLIPHBA
from hba_sweep.model.spec import ForwardPlan, ModelSpec


def create_model(spec: ModelSpec, plan: ForwardPlan = ForwardPlan()) -> CLIPHBA:
    """CLIP-HBA with the layout of ``spec`` (backbone weights loaded, adapters attached) running ``plan``."""
    return CLIPHBA(
        backbone=spec.backbone,
        pretrained=spec.pretrained,
        vision_layers=spec.vision_layers,
        transformer_layers=spec.transformer_layers,
        rank=spec.rank,
        dora_alpha=spec.alpha,
        dora_dropout=spec.dora_dropout,
        adapter=spec.adapter,
        plan=plan,
    )
