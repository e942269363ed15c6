"""Readout-only last blocks: one transformer block evaluated at one position per sequence.

CLIP reads the last vision block at the class token and the last text block at each prompt's
end-of-text token (DESIGN.md, trap 10). In that block every position still contributes keys
and values, but the query, the attention output, ``out_proj`` (with its adapter), ``ln_attn``,
``ls_1``, ``ln_2``, the MLP and ``ls_2`` act position-wise, so computing them for the read
position only gives the same numbers as the full block (up to float rounding). This module
mirrors open_clip 3.3's ``CustomResidualAttentionBlock`` / ``Attention`` forward for that one
position, options included (qk norm, per-head scaling, inner norm, ``ln_attn``, layer scale, an
additive or boolean attention mask whose rows are the read positions).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.transformer import Attention, CustomResidualAttentionBlock
from torch import nn


def unsupported(block: nn.Module) -> str | None:
    """Why ``block_at`` cannot evaluate ``block`` (None when it can)."""
    if not isinstance(block, CustomResidualAttentionBlock) or not isinstance(block.attn, Attention):
        return f"block type {type(block).__name__} is not open_clip's CustomResidualAttentionBlock"
    if block.attn.logit_scale is not None:  # open_clip 3.3's own full block fails on it too (bmm on 4-D)
        return "scaled cosine attention"
    return None


def block_at(block: CustomResidualAttentionBlock, x: torch.Tensor, positions: torch.Tensor,
             attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The output of ``block(x, attn_mask)`` at ``positions`` (one per sequence): (N, C).

    ``x`` is (N, L, C); ``positions`` (N,) integer; ``attn_mask`` (L, L) as open_clip takes it.
    Keys and values come from all L positions, everything else from the read position only.
    """
    n, length, width = x.shape
    rows = torch.arange(n, device=x.device)
    positions = positions.to(x.device)
    attn = block.attn
    h = block.ln_1(x)
    q = F.linear(h[rows, positions], attn.in_proj_weight[:width],
                 None if attn.in_proj_bias is None else attn.in_proj_bias[:width])
    k, v = F.linear(h, attn.in_proj_weight[width:],
                    None if attn.in_proj_bias is None else attn.in_proj_bias[width:]).chunk(2, dim=-1)
    heads = attn.num_heads
    q = attn.ln_q(q.reshape(n, 1, heads, -1).transpose(1, 2))  # (N, H, 1, D)
    k = attn.ln_k(k.reshape(n, length, heads, -1).transpose(1, 2))  # (N, H, L, D)
    v = v.reshape(n, length, heads, -1).transpose(1, 2)
    mask = None
    if attn_mask is not None:
        assert attn_mask.ndim == 2, "per-sequence masks are not supported"
        mask = _additive(attn_mask, q.dtype)[positions].reshape(n, 1, 1, length)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (N, H, 1, D)
    if attn.head_scale is not None:
        out = out * attn.head_scale
    out = attn.out_drop(attn.out_proj(attn.ln_inner(out.transpose(1, 2).reshape(n, width))))
    y = x[rows, positions] + block.ls_1(block.ln_attn(out))
    return y + block.ls_2(block.mlp(block.ln_2(y)))


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask (True = blocked) as open_clip's Attention turns it into an additive one."""
    if mask.dtype == torch.bool:
        return torch.zeros_like(mask, dtype=dtype).masked_fill_(mask, float("-inf"))
    return mask.to(dtype)
