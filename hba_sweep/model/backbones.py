"""One door to the CLIP backbones: name resolution, the tiny test backbone, construction.

Every tower is built with open_clip's ``block_type: "custom"`` so that attention calls
``attn.out_proj`` as an ordinary ``nn.Linear`` and an adapter placed there is used
(DESIGN.md, trap 1). The study's names (``ViT-L/14``, ...) are OpenAI's architecture: QuickGELU
whatever the weights' source, as is any backbone with ``pretrained: openai`` (trap 2).

``pretrained`` is ``openai`` (OpenAI's file in ``~/.cache/clip`` if it is there and verified,
else open_clip's own cache or download), another open_clip tag, a local file (hba_sweep.model.weights:
a verified OpenAI TorchScript archive or a plain state dict), or ``none`` (seeded random init).
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

from hba_sweep.foundation import content_hash
from hba_sweep.foundation.errors import ConfigError
from hba_sweep.model import weights

log = logging.getLogger(__name__)

TINY_BACKBONE = "hba-tiny"
RANDOM_INIT_SEED = 0  # `pretrained: none` gives the same weights in every trial

# The published study's names -> open_clip architecture names.
STUDY_NAMES = {
    "ViT-L/14": "ViT-L-14",
    "ViT-B/16": "ViT-B-16",
    "ViT-B/32": "ViT-B-32",
    "RN50": "RN50",
}
NO_WEIGHTS = (None, "", "none")


@lru_cache(maxsize=1)
def register_tiny_backbone() -> None:
    """Register ``hba-tiny`` (small width/depth, 64 px images) with open_clip's registry."""
    path = resources.files("hba_sweep") / "resources" / f"{TINY_BACKBONE}.json"
    open_clip.add_model_config(str(path))


def resolve_backbone(backbone: str, pretrained: str | None) -> str:
    """Map a study or open_clip backbone name to the open_clip architecture to build."""
    register_tiny_backbone()
    name = STUDY_NAMES.get(backbone, backbone)
    if uses_quick_gelu(backbone, pretrained) and not name.endswith("-quickgelu"):
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


def uses_quick_gelu(backbone: str, pretrained: str | None) -> bool:
    """OpenAI's architecture: a study name (whatever the weights' source) or OpenAI's weights."""
    return backbone in STUDY_NAMES or pretrained == "openai"


def backbone_config(backbone: str, pretrained: str | None = None) -> dict:
    """The open_clip model config (a deep copy) for a backbone name."""
    return copy.deepcopy(open_clip.get_model_config(resolve_backbone(backbone, pretrained)))


@lru_cache(maxsize=64)
def backbone_depths(backbone: str) -> tuple[int, int]:
    """Number of (vision, text) transformer blocks of a backbone, without building it (remembered per
    name: a search space validates thousands of trials of a few backbones)."""
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
    """A string naming the backbone weights, for cache keys (a file: its content's SHA-256)."""
    if pretrained in (None, "", "none"):
        return f"random-init-seed{RANDOM_INIT_SEED}"
    if os.path.isfile(str(pretrained)):
        return f"sha256:{content_hash.file_digest(str(pretrained))}"
    return str(pretrained)


def create_clip(backbone: str, pretrained: str | None) -> torch.nn.Module:
    """Build an open_clip CLIP with custom attention blocks; weights from a tag, a file or none."""
    name = resolve_backbone(backbone, pretrained)
    cfg = backbone_config(backbone, pretrained)
    file = _weights_file(name, pretrained)
    tag = None if pretrained in NO_WEIGHTS or file is not None else str(pretrained)
    if tag is not None and tag not in open_clip.list_pretrained_tags_by_model(name):
        raise ConfigError(
            f"pretrained={pretrained!r}: neither a file nor a weights tag of backbone={backbone!r} "
            f"(tags: {open_clip.list_pretrained_tags_by_model(name)}). Fix: give an existing weights "
            "file, one of those tags, or none."
        )
    state = weights.read_weights(file, name, backbone) if file is not None else None  # refused before any build
    quiet = contextlib.nullcontext() if tag else _no_warnings()  # "initialized randomly" is the intent
    with torch.random.fork_rng(devices=[]), quiet:
        torch.manual_seed(RANDOM_INIT_SEED)  # a random backbone stands in for fixed weights
        model = open_clip.create_model(
            name,
            pretrained=tag,
            vision_cfg=dict(cfg["vision_cfg"], block_type="custom"),
            text_cfg=dict(cfg["text_cfg"], block_type="custom"),
            force_quick_gelu=uses_quick_gelu(backbone, pretrained),
        )
    if state is not None:
        weights.load_weights(model, state, str(file), backbone)
    return model.eval()


def _weights_file(arch: str, pretrained: str | None) -> str | None:
    """The local file to load: ``pretrained`` itself, or for ``openai`` OpenAI's verified file in
    ~/.cache/clip (a file there that fails the hash check is left alone: open_clip fetches the weights)."""
    if pretrained in NO_WEIGHTS:
        return None
    if os.path.isfile(str(pretrained)):
        return str(pretrained)
    if pretrained != "openai":
        return None
    cached = weights.cached_openai_file(arch)
    if cached is None:
        return None
    if weights.file_sha256(cached) == weights.url_sha256(weights.openai_url(arch)):
        return str(cached)
    log.warning("%s does not match the SHA-256 of OpenAI's URL; not loaded (open_clip's copy is used instead)", cached)
    return None
