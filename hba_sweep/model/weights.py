"""Backbone weights as users have them, read without running code (DESIGN.md, trap 2).

- An OpenAI TorchScript archive (what OpenAI's ``clip`` downloads to ``~/.cache/clip/<name>.pt``):
  loaded only if its SHA-256 equals the hash in OpenAI's download URL for that model (the path
  segment before the file name, the check OpenAI's own loader makes). ``torch.jit.load`` can run
  code, so any other archive is refused.
- A plain state dict: ``.safetensors``, or a ``.pt``/``.pth``/``.bin`` read with
  ``torch.load(weights_only=True)``; OpenAI keys (also with the archive's ``input_resolution``,
  ``context_length``, ``vocab_size`` entries) or open_clip keys (optionally under ``state_dict``
  and with a ``module.`` prefix).
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from functools import lru_cache
from pathlib import Path

import open_clip
import torch
from open_clip.factory import load_state_dict
from open_clip.model import convert_to_custom_text_state_dict

from hba_sweep.foundation import io_utils
from hba_sweep.foundation.errors import ConfigError, refused_load

OPENAI_CACHE = Path("~/.cache/clip")  # where OpenAI's clip.load keeps its downloads
ARCHIVE_CONSTANTS = ("input_resolution", "context_length", "vocab_size")


def openai_url(arch: str) -> str:
    """OpenAI's download URL for an open_clip architecture name ('' if OpenAI published none).

    open_clip's table holds the same URLs as OpenAI's ``clip._MODELS``."""
    return open_clip.get_pretrained_url(arch.removesuffix("-quickgelu"), "openai")


def url_sha256(url: str) -> str:
    """The SHA-256 embedded in an OpenAI download URL: the path segment before the file name."""
    return url.rstrip("/").split("/")[-2] if url else ""


def cached_openai_file(arch: str) -> Path | None:
    """``~/.cache/clip/<file of OpenAI's URL>`` if it is there (e.g. ViT-L-14.pt), else None."""
    url = openai_url(arch)
    path = OPENAI_CACHE.expanduser() / os.path.basename(url) if url else None
    return path if path is not None and path.is_file() else None


@lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    return io_utils.file_sha256(path)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file (remembered per path, size and mtime within a process)."""
    st = os.stat(path)
    return _sha256(os.path.abspath(path), st.st_size, st.st_mtime_ns)


def is_torchscript_archive(path: str | os.PathLike) -> bool:
    """A zip whose records include ``constants.pkl``: what ``torch.jit.save`` writes."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/", 1)[-1] == "constants.pkl" for name in archive.namelist())


def verified_archive_state_dict(path: str | os.PathLike, arch: str, backbone: str) -> dict[str, torch.Tensor]:
    """The state dict of an OpenAI TorchScript archive whose SHA-256 matches OpenAI's URL for ``arch``."""
    expected = url_sha256(openai_url(arch))
    if not expected:
        raise ConfigError(
            f"pretrained={str(path)!r}: a TorchScript archive, and OpenAI published none for "
            f"backbone={backbone!r}, so it cannot be verified; loading it could run code. Fix: give "
            "a plain state dict (.safetensors, or .pt saved from model.state_dict())."
        )
    found = file_sha256(path)
    if found != expected:
        raise ConfigError(
            f"pretrained={str(path)!r}: a TorchScript archive whose SHA-256 ({found[:12]}...) is not "
            f"that of OpenAI's {os.path.basename(openai_url(arch))} for backbone={backbone!r} "
            f"({expected[:12]}...); loading it could run code, so it is refused. Fix: use OpenAI's own "
            "file for this backbone (as downloaded to ~/.cache/clip), pretrained: openai, or a plain "
            "state dict (.safetensors, or .pt saved from model.state_dict())."
        )
    with warnings.catch_warnings():  # torch.jit.load's deprecation notice
        warnings.simplefilter("ignore", FutureWarning)
        state = torch.jit.load(str(path), map_location="cpu").state_dict()  # verified: OpenAI's published file
    return {k: v for k, v in state.items() if k not in ARCHIVE_CONSTANTS}


def state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A plain state dict from .safetensors or a weights_only torch file; never unpickles code."""
    try:
        state = load_state_dict(str(path), weights_only=True)  # unwraps state_dict, strips module.
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        fix = "give OpenAI's TorchScript file, a .safetensors file, or a .pt saved from model.state_dict()."
        raise refused_load(f"pretrained={str(path)!r}: not a readable state dict", exc, fix, ConfigError) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"pretrained={str(path)!r}: does not hold a dict of tensors. Fix: save model.state_dict().")
    return {k: v for k, v in state.items() if k not in ARCHIVE_CONSTANTS}


def read_weights(path: str | os.PathLike, arch: str, backbone: str) -> dict[str, torch.Tensor]:
    """Backbone weights from a local file: a verified OpenAI archive or a plain state dict."""
    if is_torchscript_archive(path):
        return verified_archive_state_dict(path, arch, backbone)
    return state_dict_file(path)


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str, backbone: str) -> None:
    """Load into ``model`` (strict; the text tower's key layouts converted, buffers the model does not
    save ignored); ConfigError when the weights do not fit."""
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    transient = {name for name, _ in model.named_buffers()} - set(model.state_dict())  # e.g. attn_mask
    state = {k: v for k, v in state.items() if k not in transient}  # a scripted model saves those too
    if "logit_scale" in state and state["logit_scale"].ndim != model.logit_scale.ndim:
        state["logit_scale"] = state["logit_scale"].reshape(model.logit_scale.shape)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
        raise ConfigError(
            f"pretrained={source!r}: these weights do not fit backbone={backbone!r} "
            f"({'; '.join(lines)[:300]}). Fix: give the weights of that backbone, or name the "
            "backbone they belong to."
        ) from None
