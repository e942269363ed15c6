"""One door to the CLIP backbones: name resolution, the tiny test backbone, construction.

Every tower is built with open_clip's ``block_type: "custom"`` so that attention calls
``attn.out_proj`` as an ordinary ``nn.Linear`` and an adapter placed there is used
(DESIGN.md, trap 1). OpenAI weights get QuickGELU (trap 2).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from functools import lru_cache
from importlib import resources

import open_clip
import torch

from hba_sweep.errors import ConfigError

TINY_BACKBONE = "hba-tiny"
RANDOM_INIT_SEED = 0  # `pretrained: none` gives the same weights in every trial

# The published study's names -> open_clip architecture names.
STUDY_NAMES = {
    "ViT-L/14": "ViT-L-14",
    "ViT-B/16": "ViT-B-16",
    "ViT-B/32": "ViT-B-32",
    "RN50": "RN50",
}


@lru_cache(maxsize=1)
def register_tiny_backbone() -> None:
    """Register ``hba-tiny`` (small width/depth, 64 px images) with open_clip's registry."""
    path = resources.files("hba_sweep") / "resources" / f"{TINY_BACKBONE}.json"
    open_clip.add_model_config(str(path))


def resolve_backbone(backbone: str, pretrained: str | None) -> str:
    """Map a study or open_clip backbone name to the open_clip architecture to build."""
    register_tiny_backbone()
    name = STUDY_NAMES.get(backbone, backbone)
    if pretrained == "openai" and not name.endswith("-quickgelu"):
        quick = f"{name}-quickgelu"
        if quick in open_clip.list_models():
            name = quick
    if name not in open_clip.list_models():
        raise ConfigError(
            f"backbone={backbone!r}: unknown backbone. Fix: use one of "
            f"{sorted(STUDY_NAMES)}, {TINY_BACKBONE!r}, or an open_clip model name "
            "(python -c 'import open_clip; print(open_clip.list_models())')."
        )
    return name


def backbone_config(backbone: str, pretrained: str | None = None) -> dict:
    """The open_clip model config (a deep copy) for a backbone name."""
    return copy.deepcopy(open_clip.get_model_config(resolve_backbone(backbone, pretrained)))


def backbone_depths(backbone: str) -> tuple[int, int]:
    """Number of (vision, text) transformer blocks of a backbone, without building it."""
    cfg = backbone_config(backbone)
    vision_layers = cfg["vision_cfg"]["layers"]
    if not isinstance(vision_layers, int):
        raise ConfigError(f"backbone={backbone!r}: only ViT backbones can carry DoRA adapters. Fix: use a ViT.")
    return vision_layers, cfg["text_cfg"]["layers"]


@contextlib.contextmanager
def _no_warnings():
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def weights_id(pretrained: str | None) -> str:
    """A string naming the backbone weights, for cache keys (a file: path, size and mtime)."""
    if pretrained in (None, "", "none"):
        return f"random-init-seed{RANDOM_INIT_SEED}"
    if os.path.isfile(str(pretrained)):
        st = os.stat(str(pretrained))
        return f"{os.path.abspath(str(pretrained))}:{st.st_size}:{st.st_mtime_ns}"
    return str(pretrained)


def create_clip(backbone: str, pretrained: str | None) -> torch.nn.Module:
    """Build an open_clip CLIP with custom attention blocks; weights from a tag, a file or none."""
    name = resolve_backbone(backbone, pretrained)
    cfg = backbone_config(backbone, pretrained)
    vision_cfg = dict(cfg["vision_cfg"], block_type="custom")
    text_cfg = dict(cfg["text_cfg"], block_type="custom")
    use_file = pretrained not in (None, "", "none") and os.path.isfile(str(pretrained))
    tag = None if pretrained in (None, "", "none") or use_file else pretrained
    quiet = contextlib.nullcontext() if tag else _no_warnings()  # "initialized randomly" is the intent
    with torch.random.fork_rng(devices=[]), quiet:
        torch.manual_seed(RANDOM_INIT_SEED)  # a random backbone stands in for fixed weights
        model = open_clip.create_model(
            name,
            pretrained=tag,
            vision_cfg=vision_cfg,
            text_cfg=text_cfg,
            force_quick_gelu=(pretrained == "openai"),
        )
    if use_file:
        open_clip.load_checkpoint(model, str(pretrained), weights_only=True)
    return model.eval()
