"""Parts of a transformer block: evaluated at one position per sequence, or from a cached
attention context.

CLIP reads the last vision block at the class token and the last text block at each prompt's
end-of-text token (DESIGN.md, trap 10). In that block every position still contributes keys
and values, but the query, the attention output, ``out_proj`` (with its adapter), ``ln_attn``,
``ls_1``, ``ln_2``, the MLP and ``ls_2`` act position-wise, so computing them for the read
position only gives the same numbers as the full block (up to float rounding). This module
mirrors open_clip 3.3's ``CustomResidualAttentionBlock`` / ``Attention`` forward for that one
position, options included (qk norm, per-head scaling, inner norm, ``ln_attn``, layer scale, an
additive or boolean attention mask whose rows are the read positions).

The adapters sit on ``out_proj`` only, so everything a block computes before ``out_proj`` (the
attention context) depends on the block's input alone: for the first adapted block that input
is the frozen prefix, and its context can be cached with it (``attention_context``), leaving
``out_proj``, the residual and the MLP per step (``block_from_context``).
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


def attention_context(
    block: CustomResidualAttentionBlock,
    x: torch.Tensor,
    positions: torch.Tensor | None = None,
    attn_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The input of ``block.attn.out_proj`` for the block input ``x`` (N, L, C): (N, L, C), or
    (N, C) at ``positions`` (one per sequence). Keys and values come from all L positions.

    Everything here is frozen (the adapters sit on ``out_proj``), so when ``x`` is a frozen
    prefix this is constant too and may be computed once.
    """
    n, length, width = x.shape
    attn, heads = block.attn, block.attn.num_heads
    h = block.ln_1(x)
    weight, bias = attn.in_proj_weight, attn.in_proj_bias
    assert attn_mask is None or attn_mask.ndim == 2, "per-sequence masks are not supported"
    if positions is None:
        q, k, v = F.linear(h, weight, bias).chunk(3, dim=-1)
        q = q.reshape(n, length, heads, -1).transpose(1, 2)  # (N, H, L, D)
        mask = None if attn_mask is None else _additive(attn_mask, q.dtype)
    else:
        positions = positions.to(x.device)
        rows = torch.arange(n, device=x.device)
        q = F.linear(h[rows, positions], weight[:width], None if bias is None else bias[:width])
        k, v = F.linear(h, weight[width:], None if bias is None else bias[width:]).chunk(2, dim=-1)
        q = q.reshape(n, 1, heads, -1).transpose(1, 2)  # (N, H, 1, D)
        mask = None if attn_mask is None else _additive(attn_mask, q.dtype)[positions].reshape(n, 1, 1, length)
    q = attn.ln_q(q)
    k = attn.ln_k(k.reshape(n, length, heads, -1).transpose(1, 2))
    v = v.reshape(n, length, heads, -1).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if attn.head_scale is not None:
        out = out * attn.head_scale
    out = attn.ln_inner(out.transpose(1, 2).reshape(n, -1, width))
    return out if positions is None else out[:, 0]


def block_from_context(block: CustomResidualAttentionBlock, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """``block``'s output from its input ``x`` and its ``out_proj`` input ``context`` (same shape:
    (..., C)): the adapted ``out_proj``, the residual and the MLP, all position-wise."""
    attn = block.attn
    y = x + block.ls_1(block.ln_attn(attn.out_drop(attn.out_proj(context))))
    return y + block.ls_2(block.mlp(block.ln_2(y)))


def block_at(
    block: CustomResidualAttentionBlock, x: torch.Tensor, positions: torch.Tensor, attn_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The output of ``block(x, attn_mask)`` at ``positions`` (one per sequence): (N, C).

    ``x`` is (N, L, C); ``positions`` (N,) integer; ``attn_mask`` (L, L) as open_clip takes it.
    Keys and values come from all L positions, everything else from the read position only.
    """
    rows = torch.arange(len(x), device=x.device)
    context = attention_context(block, x, positions, attn_mask)
    return block_from_context(block, x[rows, positions.to(x.device)], context)


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask (True = blocked) as open_clip's Attention turns it into an additive one."""
    if mask.dtype == torch.bool:
        return torch.zeros_like(mask, dtype=dtype).masked_fill_(mask, float("-inf"))
    return mask.to(dtype)
