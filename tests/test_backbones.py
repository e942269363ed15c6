"""Backbone weights as users have them: OpenAI/open_clip state dicts, OpenAI's TorchScript archive
(verified by the hash in OpenAI's URL, anything else refused unread), QuickGELU for study names."""

from __future__ import annotations

import hashlib

import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU
from safetensors.torch import save_file

from hba_sweep.foundation.errors import ConfigError
from hba_sweep.model import backbones, weights
from hba_sweep.model.backbones import create_clip, register_tiny_backbone

OPENAI_BASE = "https://openaipublic.azureedge.net/clip/models"


def source_model(name: str = "hba-tiny", seed: int = 3, **kwargs) -> torch.nn.Module:
    """open_clip's default towers (nn.MultiheadAttention) with their own random weights."""
    register_tiny_backbone()
    torch.manual_seed(seed)
    return open_clip.create_model(name, **kwargs).eval()


def outputs(model: torch.nn.Module, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, size, size, generator=gen)
    tokens = open_clip.get_tokenizer("hba-tiny")(["a dog", "something round"])
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(tokens)


def assert_same_outputs(got: torch.nn.Module, expected: torch.nn.Module, size: int = 64) -> None:
    for a, b in zip(outputs(got, size), outputs(expected, size), strict=False):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def openai_format(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What OpenAI's files hold: fp16 tensors under the same keys, plus the archive's int entries."""
    state = {k: v.half() for k, v in model.state_dict().items()}
    state.update(input_resolution=torch.tensor(64), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    return state


def rounded_to_fp16(model: torch.nn.Module) -> torch.nn.Module:
    return model.half().float()


def test_openai_key_format_pt_loads_into_custom_blocks(tmp_path):
    source = source_model()
    path = tmp_path / "openai_format.pt"
    torch.save(openai_format(source), path)
    assert_same_outputs(create_clip("hba-tiny", str(path)), rounded_to_fp16(source))


@pytest.mark.parametrize("fmt", ["safetensors", "training_checkpoint"])
def test_open_clip_formats_load_into_custom_blocks(tmp_path, fmt):
    source = source_model()
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    if fmt == "safetensors":
        path = tmp_path / "weights.safetensors"
        save_file(state, str(path))
    else:  # what open_clip's training writes: {"epoch", "state_dict"} with DataParallel's module. prefix
        path = tmp_path / "epoch_5.pt"
        torch.save({"epoch": 5, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    model = create_clip("hba-tiny", str(path))
    assert model.visual.transformer.resblocks[0].attn.__class__.__name__ == "Attention"  # custom blocks
    assert_same_outputs(model, source)


def test_study_name_with_a_local_file_is_quick_gelu(tmp_path):
    """ViT-B/32 from a local state dict: OpenAI's architecture (QuickGELU), same outputs as its source."""
    source = source_model("ViT-B-32-quickgelu")
    path = tmp_path / "ViT-B-32-weights.pt"
    torch.save(openai_format(source), path)
    model = create_clip("ViT-B/32", str(path))
    blocks = list(model.visual.transformer.resblocks) + list(model.transformer.resblocks)
    assert all(isinstance(b.mlp.gelu, QuickGELU) for b in blocks)
    assert_same_outputs(model, rounded_to_fp16(source), size=224)


@pytest.mark.parametrize("pretrained", ["none", "openai"])
def test_study_names_resolve_to_openai_architecture(pretrained):
    for study, arch in (("ViT-L/14", "ViT-L-14"), ("ViT-B/16", "ViT-B-16"), ("ViT-B/32", "ViT-B-32")):
        assert backbones.resolve_backbone(study, pretrained) == f"{arch}-quickgelu"
    assert backbones.resolve_backbone("hba-tiny", "none") == "hba-tiny"  # open_clip names stay as named


def test_study_name_rule_applies_to_any_weights_source(tmp_path, monkeypatch):
    """A study-named backbone loaded from a file is built with QuickGELU (here a tiny stand-in name)."""
    monkeypatch.setitem(backbones.STUDY_NAMES, "Tiny/16", "hba-tiny")
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source_model().state_dict().items()}, str(path))
    gelu = create_clip("hba-tiny", str(path)).visual.transformer.resblocks[0].mlp.gelu
    quick = create_clip("Tiny/16", str(path)).visual.transformer.resblocks[0].mlp.gelu
    assert isinstance(quick, QuickGELU) and not isinstance(gelu, QuickGELU)


# ---- OpenAI's TorchScript archives ------------------------------------------------------
def torchscript_archive(path, model: torch.nn.Module) -> str:
    torch.jit.script(model).save(str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def jit_load_calls(monkeypatch):
    calls = []
    real = torch.jit.load

    def spy(path, *args, **kwargs):
        calls.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(torch.jit, "load", spy)
    return calls


@pytest.fixture()
def scripted(tmp_path):
    source = source_model()
    path = tmp_path / "hba-tiny.pt"
    return source, path, torchscript_archive(path, source)


def test_archive_with_the_hash_of_openais_url_is_loaded(scripted, monkeypatch, jit_load_calls):
    source, path, digest = scripted
    monkeypatch.setattr(weights, "openai_url", lambda arch: f"{OPENAI_BASE}/{digest}/{arch}.pt")
    assert_same_outputs(create_clip("hba-tiny", str(path)), source)
    assert jit_load_calls == [str(path)]


def test_archive_with_another_hash_is_refused_unread(scripted, monkeypatch, jit_load_calls):
    _, path, digest = scripted
    monkeypatch.setattr(weights, "openai_url", lambda arch: f"{OPENAI_BASE}/{'0' * 64}/{arch}.pt")
    with pytest.raises(ConfigError, match="TorchScript archive.*refused") as info:
        create_clip("hba-tiny", str(path))
    assert str(path) in str(info.value) and digest[:12] in str(info.value)
    assert jit_load_calls == []


def test_archive_for_a_backbone_openai_never_published_is_refused(scripted, jit_load_calls):
    _, path, _ = scripted
    with pytest.raises(ConfigError, match="cannot be verified"):
        create_clip("hba-tiny", str(path))
    assert jit_load_calls == []


def test_real_openai_urls_carry_the_hash():
    url = weights.openai_url("ViT-L-14-quickgelu")
    assert url.endswith("/ViT-L-14.pt")
    assert weights.url_sha256(url) == "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"


def test_openai_tag_uses_the_verified_file_in_the_clip_cache(tmp_path, monkeypatch, jit_load_calls):
    """``pretrained: openai`` reads ~/.cache/clip/<OpenAI's file name> when its hash matches; a file
    there with another hash is never loaded (open_clip's own copy would be used)."""
    source = source_model(force_quick_gelu=True)  # OpenAI's weights mean OpenAI's architecture
    cache = tmp_path / "cache"
    cache.mkdir()
    digest = torchscript_archive(cache / "hba-tiny.pt", source)
    monkeypatch.setattr(weights, "OPENAI_CACHE", cache)
    monkeypatch.setattr(weights, "openai_url", lambda arch: f"{OPENAI_BASE}/{digest}/hba-tiny.pt")
    monkeypatch.setattr(open_clip, "create_model", _no_download(open_clip.create_model))
    assert_same_outputs(create_clip("hba-tiny", "openai"), source)
    assert jit_load_calls == [str(cache / "hba-tiny.pt")]

    monkeypatch.setattr(weights, "openai_url", lambda arch: f"{OPENAI_BASE}/{'1' * 64}/hba-tiny.pt")
    with pytest.raises(ConfigError, match="neither a file nor a weights tag"):  # hba-tiny has no open_clip tag
        create_clip("hba-tiny", "openai")
    assert len(jit_load_calls) == 1


def _no_download(create_model):
    def wrapped(*args, pretrained=None, **kwargs):
        assert pretrained is None, "open_clip was asked to fetch weights"
        return create_model(*args, pretrained=pretrained, **kwargs)

    return wrapped


# ---- mistakes ---------------------------------------------------------------------------
class Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.target}",)


def test_pickled_code_is_refused_unrun(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"visual.proj": Exploit(tmp_path / "ran")}, path)
    with pytest.raises(ConfigError, match="nothing in it was executed"):
        create_clip("hba-tiny", str(path))
    assert not (tmp_path / "ran").exists()


def test_weights_of_another_backbone_are_a_clear_error(tmp_path):
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in source_model().state_dict().items()}, str(path))
    with pytest.raises(ConfigError, match="do not fit backbone='ViT-B/32'"):
        create_clip("ViT-B/32", str(path))


def test_unknown_tag_or_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="neither a file nor a weights tag"):
        create_clip("hba-tiny", str(tmp_path / "missing.pt"))
