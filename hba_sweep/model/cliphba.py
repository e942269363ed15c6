"""CLIPHBA: a CLIP backbone whose image features are read out against the 66 SPoSE prompts.

Prediction for dimension k is ``logit_scale * cos(image_features, text_features_k)``. DoRA
adapters (hba_sweep.model.adapters: the published variant by default, or peft's) sit on
``attn.out_proj`` of the last ``vision_layers`` vision blocks and the last ``transformer_layers``
text blocks; nothing else trains.

The network is split where the adapters start:

    images --vision_prefix (frozen)--> state --vision_suffix (adapted)--> image features
    prompts --text prefix (frozen, computed once)--> state --text suffix (adapted)--> text features

so the frozen prefixes can be computed once: the text prefix here (the prompts truncated to the
longest one, exact because the text tower is causal), the vision prefix per image set in
hba_sweep.training.prefix_cache. The first adapted block's attention before ``out_proj`` depends on the
frozen prefix only, so it is part of the state (``cache_attention``); the last adapted block of
each tower is evaluated at its readout positions only (class token, end-of-text tokens;
hba_sweep.model.readout). Which of these shortcuts run is the model's :class:`ForwardPlan`, given
at construction or by ``set_plan`` and resolved there once per tower. ``forward(images)`` runs every
block at every position on full-length prompts and is the oracle the cached path is tested against.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool
from torch import nn

from hba_sweep.foundation.errors import CheckpointError
from hba_sweep.model import adapters, readout
from hba_sweep.model.backbones import create_clip, resolve_backbone, weights_id
from hba_sweep.model.spec import ForwardPlan

TRUNCATABLE_TEXT_POOLS = ("argmax", "eos", "first")  # pooled position is the end-of-text token or earlier
logger = logging.getLogger("hba_sweep.model")  # the model layer's logger: users filter warnings by this name


def load_prompts() -> list[str]:
    """The 66 SPoSE dimension prompts, in target-column order (column k <-> prompt k)."""
    text = (resources.files("hba_sweep") / "resources" / "spose_prompts66.txt").read_text()
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    assert len(prompts) == 66, f"expected 66 prompts, found {len(prompts)}"
    return prompts


@dataclass(frozen=True)
class _Route:
    """A :class:`ForwardPlan` resolved against one model's towers (what each step actually runs)."""

    vision_layout: str  # what vision_prefix returns: "stream", "stream+context" or "stream+context@cls"
    text_cached: bool  # text_features from the frozen text state (else the whole tower, full length)
    text_from_context: bool  # the first adapted text block from its cached attention context
    text_readout: bool  # the last adapted text block at the pooled positions only


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
        plan: ForwardPlan = ForwardPlan(),
    ) -> None:
        """``dora_alpha`` None: the adapter's default (16 for hba_dora, ``rank`` for peft_dora); ``plan``:
        which cached-path shortcuts ``forward_from_prefix`` takes (all, by default)."""
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
        targets = [
            f"visual.transformer.resblocks.{i}.attn.out_proj" for i in range(self.vision_split, len(vision_blocks))
        ]
        targets += [f"transformer.resblocks.{i}.attn.out_proj" for i in range(self.text_split, len(text_blocks))]
        for p in self.clip.parameters():
            p.requires_grad_(False)
        adapters.attach(self.clip, targets, adapter, rank, dora_alpha, dora_dropout)
        self.adapted_modules = targets
        tokens = open_clip.get_tokenizer(resolve_backbone(backbone, pretrained))(prompts or load_prompts())
        self.register_buffer("text_tokens_full", tokens, persistent=False)
        self.register_buffer("text_tokens", tokens[:, : self._text_length(tokens)], persistent=False)
        self.register_buffer("text_prefix", None, persistent=False)
        self.register_buffer("text_context", None, persistent=False)
        self.recompute_text_prefix()
        self.readout_fallbacks = self._readout_fallbacks(vision_layers, transformer_layers)
        for tower, why in self.readout_fallbacks.items():
            logger.warning("%s: the last adapted %s block runs at every position (%s)", backbone, tower, why)
        self.set_plan(plan)

    # ---- the cached path's plan ---------------------------------------------------------
    @property
    def plan(self) -> ForwardPlan:
        """The :class:`ForwardPlan` in force (change it with :meth:`set_plan`)."""
        return self._plan

    def set_plan(self, plan: ForwardPlan) -> None:
        """Decide once what the cached path runs in each tower: ``plan`` against the blocks this model has
        (a tower without adapted blocks, a block type or pooling ``readout`` does not mirror)."""
        vision = self.clip.visual.transformer.resblocks[self.vision_split :]
        text = self.clip.transformer.resblocks[self.text_split :]
        layout = "stream"
        if plan.cache_attention and len(vision) > 0 and readout.unsupported(vision[0]) is None:
            one_at_cls = len(vision) == 1 and plan.readout_only and "vision" not in self.readout_fallbacks
            layout = "stream+context@cls" if one_at_cls else "stream+context"
        self._plan = plan
        self._route = _Route(
            vision_layout=layout,
            text_cached=plan.cache_text,
            text_from_context=plan.cache_attention and len(text) > 0 and readout.unsupported(text[0]) is None,
            text_readout=plan.readout_only and len(text) > 0 and "text" not in self.readout_fallbacks,
        )

    # ---- vision -------------------------------------------------------------------------
    @torch.no_grad()
    def vision_prefix(self, images: torch.Tensor) -> torch.Tensor:
        """What the adapted vision blocks start from (frozen: no grad).

        With the plan's ``cache_attention`` (and an open_clip attention block): (N, 2, T, C), the residual
        stream entering the first adapted block and that block's ``out_proj`` input, at the class
        token only (T = 1) when that block is also the last and read out there, else at every
        token. Otherwise the stream alone, (N, L, C).
        """
        visual = self.clip.visual
        x = visual._embeds(images)
        blocks = visual.transformer.resblocks
        for block in blocks[: self.vision_split]:
            x = block(x)
        layout = self.vision_state_layout()
        if layout == "stream":
            return x
        first = blocks[self.vision_split]
        if layout == "stream+context@cls":
            context = readout.attention_context(first, x, self._class_token(x))[:, None]
            return torch.stack([x[:, :1], context.to(x.dtype)], dim=1)
        return torch.stack([x, readout.attention_context(first, x).to(x.dtype)], dim=1)  # autocast: one dtype

    def vision_state_layout(self) -> str:
        """What ``vision_prefix`` returns: "stream", "stream+context" or "stream+context@cls"."""
        return self._route.vision_layout

    def vision_suffix(self, state: torch.Tensor, readout_only: bool = False) -> torch.Tensor:
        """Adapted vision blocks, pooling and projection: ``vision_prefix``'s state -> image features.

        ``readout_only``: the last block at the class token only (exact; full block where the
        backbone pools otherwise, see ``readout_fallbacks``).
        """
        visual = self.clip.visual
        blocks = list(visual.transformer.resblocks[self.vision_split :])
        readout_only = readout_only and len(blocks) > 0 and "vision" not in self.readout_fallbacks
        x = state
        if state.ndim == 4:  # the first adapted block from its cached attention context
            x, context = state[:, 0], state[:, 1]
            if readout_only and len(blocks) == 1:  # class token, shape (N, 1, C), as below
                x, context = x[:, :1], context[:, :1]
            elif x.shape[1] == 1:
                raise ValueError("a class-token-only vision state needs readout_only and one adapted block")
            x = readout.block_from_context(blocks.pop(0), x, context)
            readout_only = readout_only and len(blocks) > 0
        for block in blocks[:-1] if readout_only else blocks:
            x = block(x)
        if readout_only:  # class token, shape (N, 1, C): _pool's per-token ln_post reads the same
            x = readout.block_at(blocks[-1], x, self._class_token(x))[:, None]
        pooled, _ = visual._pool(x)
        return pooled @ visual.proj if visual.proj is not None else pooled

    @staticmethod
    def _class_token(x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(x), dtype=torch.long, device=x.device)

    def vision_features_full(self, images: torch.Tensor) -> torch.Tensor:
        """The uncached vision path: every block at every position (the oracle)."""
        visual = self.clip.visual
        x = visual._embeds(images)
        for block in visual.transformer.resblocks:
            x = block(x)
        pooled, _ = visual._pool(x)
        return pooled @ visual.proj if visual.proj is not None else pooled

    # ---- text ---------------------------------------------------------------------------
    def _text_length(self, tokens: torch.Tensor) -> int:
        """Prompt length the cached text path runs: up to the longest prompt's end-of-text token
        where that is exact (causal mask, pooled position at or before it), else the full context."""
        if self.clip.attn_mask is None or self.clip.text_pool_type not in TRUNCATABLE_TEXT_POOLS:
            return tokens.shape[1]
        return int(self._text_positions(tokens).max()) + 1

    def _text_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """The position each prompt's feature is read from (open_clip's text_global_pool)."""
        pool = self.clip.text_pool_type
        if pool == "argmax":
            return tokens.argmax(dim=-1)
        if pool == "eos":
            return (tokens == self.clip.text_eos_id).int().argmax(dim=-1)
        return torch.full((len(tokens),), 0 if pool == "first" else tokens.shape[1] - 1, dtype=torch.long)

    def _text_attn_mask(self) -> torch.Tensor | None:
        mask = self.clip.attn_mask
        n = self.text_tokens.shape[1]
        return None if mask is None else mask[:n, :n]

    def recompute_text_prefix(self) -> None:
        """Compute the frozen text state (``text_prefix``, ``text_context``) from the current weights."""
        self.text_prefix = self._text_prefix()
        self.text_context = self._text_context()

    @torch.no_grad()
    def _text_prefix(self) -> torch.Tensor:
        clip = self.clip
        n = self.text_tokens.shape[1]
        x = clip.token_embedding(self.text_tokens) + clip.positional_embedding[:n]
        mask = self._text_attn_mask()
        for block in clip.transformer.resblocks[: self.text_split]:
            x = block(x, attn_mask=mask)
        return x

    @torch.no_grad()
    def _text_context(self) -> torch.Tensor | None:
        """The first adapted text block's ``out_proj`` input on the text prefix (None where there is none)."""
        blocks = self.clip.transformer.resblocks[self.text_split :]
        if len(blocks) == 0 or readout.unsupported(blocks[0]) is not None:
            return None
        return readout.attention_context(blocks[0], self.text_prefix, attn_mask=self._text_attn_mask())

    def text_features(self) -> torch.Tensor:
        """Features of the 66 prompts through the adapted text blocks: (66, embed_dim).

        With the plan's ``cache_text`` the frozen blocks' output (truncated prompts) is reused; without
        it the whole tower runs on the 77-token prompts, as the published code did (the oracle).
        """
        route = self._route
        if not route.text_cached:
            return self.text_features_full()
        x = self.text_prefix
        mask = self._text_attn_mask()
        mask = None if mask is None else mask.to(x.device)
        blocks = list(self.clip.transformer.resblocks[self.text_split :])
        read = route.text_readout
        positions = self._text_positions(self.text_tokens).to(x.device)
        if route.text_from_context:  # the first adapted block from its context
            context = self.text_context
            if read and len(blocks) == 1:
                rows = torch.arange(len(x), device=x.device)
                pooled = readout.block_from_context(blocks[0], x[rows, positions], context[rows, positions])
                return self._text_project(self.clip.ln_final(pooled))
            x = readout.block_from_context(blocks.pop(0), x, context)
        if not read:
            for block in blocks:
                x = block(x, attn_mask=mask)
            return self._text_readout(x, self.text_tokens)
        for block in blocks[:-1]:
            x = block(x, attn_mask=mask)
        pooled = readout.block_at(blocks[-1], x, positions, mask)
        return self._text_project(self.clip.ln_final(pooled))

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
        return self._text_project(x)

    def _text_project(self, pooled: torch.Tensor) -> torch.Tensor:
        projection = self.clip.text_projection
        if projection is None:
            return pooled
        return projection(pooled) if isinstance(projection, nn.Linear) else pooled @ projection

    def _readout_fallbacks(self, vision_layers: int, transformer_layers: int) -> dict[str, str]:
        """Towers whose last adapted block cannot be read out at one position, with the reason."""
        visual, out = self.clip.visual, {}
        if vision_layers > 0:
            why = readout.unsupported(visual.transformer.resblocks[-1])
            if visual.attn_pool is not None:
                why = "attention pooling"
            elif visual.pool_type != "tok":
                why = f"pool_type {visual.pool_type!r}, not the class token"
            if why:
                out["vision"] = why
        if transformer_layers > 0:
            why = readout.unsupported(self.clip.transformer.resblocks[-1])
            if self.clip.text_pool_type not in TRUNCATABLE_TEXT_POOLS + ("last",):
                why = f"text pool_type {self.clip.text_pool_type!r}"
            if why:
                out["text"] = why
        return out

    # ---- head ---------------------------------------------------------------------------
    def head(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """``logit_scale * cos(image, text_k)`` for k = 0..65."""
        image_features = F.normalize(image_features, dim=-1)
        text_features = F.normalize(text_features, dim=-1)
        return self.clip.logit_scale.exp() * image_features @ text_features.t()

    def forward_from_prefix(self, state: torch.Tensor, text_features: torch.Tensor | None = None) -> torch.Tensor:
        """Predictions from ``vision_prefix``'s state (cached or computed now); ``text_features`` (from
        ``text_features()``) may be passed when the adapters do not change between calls."""
        text = self.text_features() if text_features is None else text_features
        return self.head(self.vision_suffix(state, readout_only=self._plan.readout_only), text)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Predictions from images through every block at every position, nothing cached (the oracle)."""
        return self.head(self.vision_features_full(images), self.text_features_full())

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
            raise CheckpointError(
                f"the checkpoint holds {found} adapters, this model is built with adapter: "
                f"{self.adapter}. Fix: set adapter: {found} to read it."
            )
        own = dict(adapters.named_adapter_parameters(self))
        if set(state) != set(own):
            missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
            raise ValueError(f"adapter keys do not match this model (missing {missing[:3]}, unexpected {extra[:3]})")
        wrong = [
            f"{n} {tuple(v.shape)} (model: {tuple(own[n].shape)})"
            for n, v in state.items()
            if tuple(v.shape) != tuple(own[n].shape)
        ]
        if wrong:
            raise ValueError(f"adapter shapes do not match this model: {wrong[:3]}")
        with torch.no_grad():
            for name, value in state.items():
                own[name].copy_(value.to(own[name].device, own[name].dtype))

    def train(self, mode: bool = True) -> CLIPHBA:
        """Only adapter dropout reacts to train mode; frozen layers stay in eval."""
        super().train(mode)
        self.clip.eval()
        for module in adapters.adapter_modules(self.clip):
            module.train(mode)
        return self

    def prefix_key(self) -> str:
        """Identifies what the frozen vision prefix computes: backbone, weights, split, size, state layout."""
        parts = [
            resolve_backbone(self.backbone_name, self.pretrained),
            weights_id(self.pretrained),
            str(self.vision_split),
            str(self.image_size),
            self.vision_state_layout(),
        ]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _image_size(clip: nn.Module) -> int:
    size = clip.visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)
