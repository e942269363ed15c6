"""What CLIP-HBA network to build (:class:`ModelSpec`) and how its cached path runs (:class:`ForwardPlan`).

``ModelSpec`` is the one home of the model layout and its published defaults: the training config
extends it (``TrainConfig.model_spec``), the inference config and the analysis read it from a
checkpoint's recorded config. :func:`hba_sweep.model.factory.create_model` builds the network from it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hba_sweep.model.adapters import default_alpha


@dataclass(frozen=True)
class ModelSpec:
    """What decides the network a checkpoint's adapters belong to, with the published study's defaults."""

    backbone: str = "ViT-L/14"
    pretrained: str = "openai"  # an open_clip tag, a weights file, or none (seeded random init)
    vision_layers: int = 2
    transformer_layers: int = 1
    adapter: str = "hba_dora"  # the published DoRA; "peft_dora": peft's DoRA (hba_sweep/model/adapters.py)
    rank: int = 32
    dora_alpha: float | None = None  # None: the adapter's default (hba_dora 16, published; peft_dora = rank)
    dora_dropout: float = 0.0  # as published in effect (the published training never applied its 0.1)

    @staticmethod
    def from_mapping(values: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> ModelSpec:
        """The spec named by a config mapping (other keys ignored), with the non-None ``overrides`` on top."""
        merged = {k: values[k] for k in MODEL_FIELDS if k in values}
        merged.update({k: v for k, v in (overrides or {}).items() if k in MODEL_FIELDS and v is not None})
        return ModelSpec(**merged)

    @property
    def model_spec(self) -> ModelSpec:
        """The model layout alone (for a config that extends this class, its model settings)."""
        return ModelSpec(**{k: getattr(self, k) for k in MODEL_FIELDS})

    def key(self) -> str:
        """A short hash of the layout (cache keys of the analysis' evaluations)."""
        values = {k: getattr(self, k) for k in MODEL_FIELDS}
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def alpha(self) -> float:
        """DoRA scaling numerator (scaling = alpha / rank): ``dora_alpha``, else the adapter's default."""
        return default_alpha(self.adapter, self.rank) if self.dora_alpha is None else float(self.dora_alpha)


MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelSpec))


@dataclass(frozen=True)
class ForwardPlan:
    """How ``CLIPHBA.forward_from_prefix`` runs, decided once per model (``CLIPHBA.set_plan``).

    All on (the default): the frozen text blocks run once on prompts truncated to the longest one
    (``cache_text``), the last adapted block of each tower runs at its readout position only
    (``readout_only``) and the first adapted block starts from its cached attention context
    (``cache_attention``: ``vision_prefix`` then returns the stream and that context). All off: every
    block at every position, as the published code ran (``cache_frozen_prefix: false``).
    """

    cache_text: bool = True
    readout_only: bool = True
    cache_attention: bool = True

    @staticmethod
    def cached(on: bool) -> ForwardPlan:
        """Every shortcut on, or every one off."""
        return ForwardPlan(cache_text=on, readout_only=on, cache_attention=on)
