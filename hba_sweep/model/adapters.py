"""The two adapter variants behind one door: build on a CLIP, list, save, load, published keys.

- ``hba_dora`` (default): the published CLIP-HBA DoRA, written from its formulas. For a frozen
  ``attn.out_proj`` with weight W (out x in) and bias b: m = row norms of W (trainable), D = W / m
  (fixed), ``delta_D_A`` (r x out) and ``delta_D_B`` (in x r) both ``kaiming_uniform_(a=sqrt(5))``,
  s = alpha / r, D' = D + s (delta_D_B @ delta_D_A)^T, W' = m D' / (||D'_row|| + 1e-8), y = x W'^T + b.
  The norm is not detached. It is a small module that replaces ``attn.out_proj`` (the towers use
  open_clip's custom blocks, which call ``out_proj`` as a Linear); peft's custom-module hook would
  nest the tensors under peft's own names, not the published ones, so it is not used here.
- ``peft_dora``: peft's DoRA (``LoraConfig(use_dora=True)``): zero-initialised B, update added to W,
  detached norm, input dropout; kept as an option.

Parameter names inside a CLIP (``hba_dora``): ``{visual.,}transformer.resblocks.{i}.attn.out_proj.
{m,delta_D_A,delta_D_B}``; the published checkpoints use the same names under ``clip_model.``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

HBA_DORA, PEFT_DORA = "hba_dora", "peft_dora"
ADAPTERS = (HBA_DORA, PEFT_DORA)
DEFAULT_ADAPTER = HBA_DORA
HBA_ALPHA = 16.0  # the published code never passes another alpha
HBA_TENSORS = ("m", "delta_D_A", "delta_D_B")
PEFT_MARK = "lora_"
OWN_PREFIX, PUBLISHED_PREFIX = "clip.", "clip_model."
PUBLISHED_KEY = re.compile(
    r"^clip_model\.((?:visual\.)?transformer\.resblocks\.\d+\.attn\.out_proj)\.(m|delta_D_A|delta_D_B)$"
)


class HBADoRALinear(nn.Module):
    """The published DoRA on one frozen Linear: trainable magnitude ``m`` and low-rank direction update."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float = HBA_ALPHA, dropout: float = 0.0) -> None:
        super().__init__()
        weight = base.weight.detach().clone().float()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.rank, self.scaling = rank, alpha / rank
        self.m = nn.Parameter(weight.norm(dim=1))  # (out,)
        self.register_buffer("D", weight / self.m.detach()[:, None], persistent=False)  # (out, in), unit rows
        self.delta_D_A = nn.Parameter(torch.empty(rank, self.out_features))  # (r, out)
        self.delta_D_B = nn.Parameter(torch.empty(self.in_features, rank))  # (in, r)
        nn.init.kaiming_uniform_(self.delta_D_A, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.delta_D_B, a=math.sqrt(5))
        self.bias = None if base.bias is None else nn.Parameter(base.bias.detach().clone(), requires_grad=False)
        self.dropout = nn.Dropout(dropout)

    def _weight(self, delta: torch.Tensor) -> torch.Tensor:
        direction = self.D + delta.t()  # D' (out, in)
        return self.m[:, None] * direction / (direction.norm(dim=1, keepdim=True) + 1e-8)

    @property
    def weight(self) -> torch.Tensor:
        """W' without dropout (what a reader of ``.weight``, e.g. nn.MultiheadAttention, sees)."""
        return self._weight(self.scaling * (self.delta_D_B @ self.delta_D_A))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        delta = self.dropout(self.scaling * (self.delta_D_B @ self.delta_D_A))  # (in, out)
        return F.linear(x, self._weight(delta), self.bias)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rank={self.rank}, scaling={self.scaling:g}"


def default_alpha(adapter: str, rank: int) -> float:
    """``dora_alpha`` when unset: 16 for hba_dora (published), ``rank`` for peft_dora (scale 1)."""
    return HBA_ALPHA if adapter == HBA_DORA else float(rank)


def attach(clip: nn.Module, targets: list[str], adapter: str, rank: int, alpha: float | None, dropout: float) -> None:
    """Put adapters of kind ``adapter`` on the Linear modules named ``targets`` (in ``clip``)."""
    if adapter not in ADAPTERS:
        raise ValueError(f"adapter={adapter!r}: unknown adapter; use one of {list(ADAPTERS)}")
    alpha = default_alpha(adapter, rank) if alpha is None else float(alpha)
    if not targets:
        return
    if adapter == HBA_DORA:
        for name in targets:
            parent, _, child = name.rpartition(".")
            owner = clip.get_submodule(parent)
            setattr(owner, child, HBADoRALinear(getattr(owner, child), rank, alpha, dropout))
        return
    from peft import LoraConfig, inject_adapter_in_model  # reason: peft loads only for the peft_dora adapter

    # A regex (full match) rather than a list: peft matches list entries as name suffixes, and
    # "transformer.resblocks.0..." would also adapt "visual.transformer.resblocks.0...".
    pattern = "|".join(re.escape(t) for t in targets)
    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout, use_dora=True, target_modules=f"^(?:{pattern})$"
    )
    inject_adapter_in_model(config, clip)


def named_adapter_parameters(module: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """The trained tensors of either adapter kind, by their names in ``module``."""
    for name, param in module.named_parameters():
        if PEFT_MARK in name or _is_hba_tensor(module, name):
            yield name, param


def _is_hba_tensor(module: nn.Module, name: str) -> bool:
    owner, _, leaf = name.rpartition(".")
    return leaf in HBA_TENSORS and isinstance(module.get_submodule(owner), HBADoRALinear)


def adapter_modules(module: nn.Module) -> Iterator[nn.Module]:
    """The modules holding adapters (the ones whose train/eval mode matters: dropout)."""
    for name, sub in module.named_modules():
        if isinstance(sub, HBADoRALinear) or PEFT_MARK in name:
            yield sub


def kind_of(state: Mapping[str, object]) -> str | None:
    """Which adapter kind a state dict holds, from its key names (None: neither or empty)."""
    if any(PEFT_MARK in k for k in state):
        return PEFT_DORA
    if state and all(k.rpartition(".")[2] in HBA_TENSORS for k in state):
        return HBA_DORA
    return None


def to_published_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``clip.…out_proj.{m,delta_D_A,delta_D_B}`` (CLIPHBA, hba_dora) -> the published ``clip_model.…`` keys."""
    out = {}
    for key, value in state.items():
        if not key.startswith(OWN_PREFIX) or kind_of({key: value}) != HBA_DORA:
            raise KeyError(
                f"{key!r} is not an hba_dora adapter tensor of CLIPHBA (clip.…attn.out_proj.m|delta_D_A|delta_D_B)"
            )
        out[PUBLISHED_PREFIX + key.removeprefix(OWN_PREFIX)] = value
    return out


def from_published_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The published ``clip_model.…`` keys -> CLIPHBA's ``clip.…`` adapter keys."""
    out = {}
    for key, value in state.items():
        if not PUBLISHED_KEY.match(key):
            raise KeyError(
                f"{key!r} is not a published DoRA key "
                "(clip_model.{visual.,}transformer.resblocks.<i>.attn.out_proj.{m,delta_D_A,delta_D_B})"
            )
        out[OWN_PREFIX + key.removeprefix(PUBLISHED_PREFIX)] = value
    return out


def check_published_shapes(state: Mapping[str, torch.Tensor]) -> list[str]:
    """Problems with a published-key state dict: missing tensors per module, inconsistent shapes."""
    problems, modules = [], {}
    for key, value in state.items():
        match = PUBLISHED_KEY.match(key)
        if match is None:
            problems.append(f"unexpected key {key!r}")
        elif not isinstance(value, torch.Tensor):
            problems.append(f"{key!r} is a {type(value).__name__}, not a tensor")
        else:
            modules.setdefault(match.group(1), {})[match.group(2)] = value
    for name, parts in sorted(modules.items()):
        missing = [t for t in HBA_TENSORS if t not in parts]
        if missing:
            problems.append(f"{name} lacks {missing}")
            continue
        m, a, b = (parts[t] for t in HBA_TENSORS)
        if m.dim() != 1 or a.dim() != 2 or b.dim() != 2 or a.shape != (b.shape[1], m.shape[0]):
            problems.append(
                f"{name}: shapes m {tuple(m.shape)}, delta_D_A {tuple(a.shape)}, delta_D_B "
                f"{tuple(b.shape)} are not (out,), (r, out), (in, r)"
            )
    if not modules and not problems:
        problems.append("no DoRA tensors")
    return problems
