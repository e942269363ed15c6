"""CLIPHBA: a CLIP backbone whose image features are read out against the 66 SPoSE prompts.

Prediction for dimension k is ``logit_scale * cos(image_features, text_features_k)``. DoRA
adapters (hba_sweep.adapters: the published variant by default, or peft's) sit on
``attn.out_proj`` of the last ``vision_layers`` vision blocks and the last ``transformer_layers``
text blocks; nothing else trains.

The network is split where the adapters start:

    images --vision_prefix (frozen)--> tokens --vision_suffix (adapted)--> image features
    prompts --text prefix (frozen, computed once)--> tokens --text suffix (adapted)--> text features

so the frozen prefixes can be computed once: the text prefix here (the prompts truncated to the
longest one, exact because the text tower is causal), the vision prefix per image set in
hba_sweep.prefix_cache. ``forward(images)`` runs everything on full-length prompts and is the
oracle the cached path is tested against.
"""

from __future__ import annotations

import hashlib
from importlib import resources

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool
from torch import nn

from hba_sweep import adapters
from hba_sweep.backbones import create_clip, resolve_backbone, weights_id
from hba_sweep.errors import CheckpointError


def load_prompts() -> list[str]:
    """The 66 SPoSE dimension prompts, in target-column order (column k <-> prompt k)."""
    text = (resources.files("hba_sweep") / "resources" / "spose_prompts66.txt").read_text()
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    assert len(prompts) == 66, f"expected 66 prompts, found {len(prompts)}"
    return prompts


class CLIPHBA(nn.Module):
    """CLIP-HBA with DoRA adapters; maps a batch of images to 66 dimension scores."""

    def __init__(
        self,
        backbone: str = "ViT-L/14",
        pretrained: str | None = "openai",
        vision_layers: int = 2,
        transformer_layers: int = 1,
        rank: int = 32,
        dora_alpha: float | None = None,
        dora_dropout: float = 0.0,
        prompts: list[str] | None = None,
        adapter: str = adapters.DEFAULT_ADAPTER,
    ) -> None:
        """``dora_alpha`` None: the adapter's default (16 for hba_dora, ``rank`` for peft_dora)."""
        super().__init__()
        self.adapter = adapter
        self.backbone_name = backbone
        self.pretrained = pretrained
        self.clip = create_clip(backbone, pretrained)
        vision_blocks = self.clip.visual.transformer.resblocks
        text_blocks = self.clip.transformer.resblocks
        self.vision_split = len(vision_blocks) - vision_layers
        self.text_split = len(text_blocks) - transformer_layers
        self.image_size = _image_size(self.clip)
        targets = [f"visual.transformer.resblocks.{i}.attn.out_proj" for i in range(self.vision_split, len(vision_blocks))]
        targets += [f"transformer.resblocks.{i}.attn.out_proj" for i in range(self.text_split, len(text_blocks))]
        for p in self.clip.parameters():
            p.requires_grad_(False)
        adapters.attach(self.clip, targets, adapter, rank, dora_alpha, dora_dropout)
        self.adapted_modules = targets
        tokens = open_clip.get_tokenizer(resolve_backbone(backbone, pretrained))(prompts or load_prompts())
        length = int(tokens.argmax(dim=-1).max()) + 1  # causal tower: positions past the longest prompt are unused
        self.register_buffer("text_tokens_full", tokens, persistent=False)
        self.register_buffer("text_tokens", tokens[:, :length], persistent=False)
        self.register_buffer("text_prefix", self._text_prefix(), persistent=False)
        self.cache_text = True  # False: every call runs the whole text tower on full-length prompts

    # ---- vision -------------------------------------------------------------------------
    @torch.no_grad()
    def vision_prefix(self, images: torch.Tensor) -> torch.Tensor:
        """Activations entering the first adapted vision block (frozen: no grad)."""
        visual = self.clip.visual
        x = visual._embeds(images)
        for block in visual.transformer.resblocks[: self.vision_split]:
            x = block(x)
        return x

    def vision_suffix(self, tokens: torch.Tensor) -> torch.Tensor:
        """Adapted vision blocks, pooling and projection: prefix tokens -> image features."""
        visual = self.clip.visual
        x = tokens
        for block in visual.transformer.resblocks[self.vision_split:]:
            x = block(x)
        pooled, _ = visual._pool(x)
        return pooled @ visual.proj if visual.proj is not None else pooled

    # ---- text ---------------------------------------------------------------------------
    def _text_attn_mask(self) -> torch.Tensor | None:
        mask = self.clip.attn_mask
        n = self.text_tokens.shape[1]
        return None if mask is None else mask[:n, :n]

    @torch.no_grad()
    def _text_prefix(self) -> torch.Tensor:
        clip = self.clip
        n = self.text_tokens.shape[1]
        x = clip.token_embedding(self.text_tokens) + clip.positional_embedding[:n]
        mask = self._text_attn_mask()
        for block in clip.transformer.resblocks[: self.text_split]:
            x = block(x, attn_mask=mask)
        return x

    def text_features(self) -> torch.Tensor:
        """Features of the 66 prompts through the adapted text blocks: (66, embed_dim).

        With ``cache_text`` the frozen blocks' output (truncated prompts) is reused; without it the
        whole tower runs on the 77-token prompts, as the published code did (the oracle).
        """
        if not self.cache_text:
            return self.text_features_full()
        x = self.text_prefix
        mask = self._text_attn_mask()
        for block in self.clip.transformer.resblocks[self.text_split:]:
            x = block(x, attn_mask=None if mask is None else mask.to(x.device))
        return self._text_readout(x, self.text_tokens)

    def text_features_full(self) -> torch.Tensor:
        """The uncached text path: every block, full context length."""
        clip = self.clip
        x = clip.token_embedding(self.text_tokens_full) + clip.positional_embedding
        for block in clip.transformer.resblocks:
            x = block(x, attn_mask=clip.attn_mask)
        return self._text_readout(x, self.text_tokens_full)

    def _text_readout(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Final norm, end-of-text pooling and projection."""
        clip = self.clip
        x = clip.ln_final(x)
        x = text_global_pool(x, tokens, clip.text_pool_type, eos_token_id=getattr(clip, "text_eos_id", None))
        projection = clip.text_projection
        if projection is None:
            return x
        return projection(x) if isinstance(projection, nn.Linear) else x @ projection

    # ---- head ---------------------------------------------------------------------------
    def head(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """``logit_scale * cos(image, text_k)`` for k = 0..65."""
        image_features = F.normalize(image_features, dim=-1)
        text_features = F.normalize(text_features, dim=-1)
        return self.clip.logit_scale.exp() * image_features @ text_features.t()

    def forward_from_prefix(self, tokens: torch.Tensor) -> torch.Tensor:
        """Predictions from cached vision-prefix activations."""
        return self.head(self.vision_suffix(tokens), self.text_features())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Predictions from images through the whole network, nothing cached (the oracle)."""
        return self.head(self.vision_suffix(self.vision_prefix(images)), self.text_features_full())

    # ---- adapters -----------------------------------------------------------------------
    def adapter_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in adapters.named_adapter_parameters(self)]

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained weights only (hba_dora: m, delta_D_A, delta_D_B; peft_dora: A, B, magnitude),
        detached, on CPU."""
        return {n: p.detach().cpu().contiguous() for n, p in adapters.named_adapter_parameters(self)}

    def load_adapter_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load adapter weights; the key set and shapes must match exactly.

        CheckpointError when the state holds the other adapter kind; ValueError for other keys/shapes.
        """
        found = adapters.kind_of(state)
        if found is not None and found != self.adapter:
            raise CheckpointError(f"the checkpoint holds {found} adapters, this model is built with adapter: "
                                  f"{self.adapter}. Fix: set adapter: {found} to read it.")
        own = dict(adapters.named_adapter_parameters(self))
        if set(state) != set(own):
            missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
            raise ValueError(f"adapter keys do not match this model (missing {missing[:3]}, unexpected {extra[:3]})")
        wrong = [f"{n} {tuple(v.shape)} (model: {tuple(own[n].shape)})" for n, v in state.items()
                 if tuple(v.shape) != tuple(own[n].shape)]
        if wrong:
            raise ValueError(f"adapter shapes do not match this model: {wrong[:3]}")
        with torch.no_grad():
            for name, value in state.items():
                own[name].copy_(value.to(own[name].device, own[name].dtype))

    def train(self, mode: bool = True) -> "CLIPHBA":
        """Only adapter dropout reacts to train mode; frozen layers stay in eval."""
        super().train(mode)
        self.clip.eval()
        for module in adapters.adapter_modules(self.clip):
            module.train(mode)
        return self

    def prefix_key(self) -> str:
        """Identifies what the frozen vision prefix computes: backbone, weights, split, size."""
        parts = [resolve_backbone(self.backbone_name, self.pretrained), weights_id(self.pretrained),
                 str(self.vision_split), str(self.image_size)]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _image_size(clip: nn.Module) -> int:
    size = clip.visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)
