"""CLIPHBA: adapters on the right modules, all of them trained, exact split paths."""

from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F

from hba_sweep.model import CLIPHBA, load_prompts
from hba_sweep.model.adapters import ADAPTERS
from hba_sweep.model.backbones import backbone_depths, register_tiny_backbone


def tiny(**kw) -> CLIPHBA:
    torch.manual_seed(0)
    args = dict(backbone="hba-tiny", pretrained="none", vision_layers=2, transformer_layers=1, rank=4, dora_dropout=0.0)
    return CLIPHBA(**{**args, **kw})


def test_prompts_are_the_66_spose_prompts_in_order(reference_data):
    published = [l.strip() for l in (reference_data / "spose_prompts66.txt").read_text().splitlines() if l.strip()]
    assert load_prompts() == published


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("vision_layers,transformer_layers", [(2, 1), (2, 3), (1, 2), (0, 1), (3, 0)])
def test_only_adapters_on_the_last_blocks_train(vision_layers, transformer_layers, adapter):
    model = tiny(vision_layers=vision_layers, transformer_layers=transformer_layers, adapter=adapter)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and trainable == set(model.adapter_state_dict())
    blocks = {n.split(".attn.")[0] for n in trainable}
    n_vis, n_txt = backbone_depths("hba-tiny")
    expected = {f"clip.visual.transformer.resblocks.{i}" for i in range(n_vis - vision_layers, n_vis)}
    expected |= {f"clip.transformer.resblocks.{i}" for i in range(n_txt - transformer_layers, n_txt)}
    assert blocks == expected
    assert all(".attn.out_proj." in n for n in trainable)


def test_matches_open_clip_full_path_before_training():
    """Untrained peft DoRA is the identity; truncated prompts and the prefix split change nothing."""
    model = tiny(adapter="peft_dora")
    images = torch.randn(3, 3, model.image_size, model.image_size)
    clip = model.clip
    with torch.no_grad():
        tokens = open_clip.get_tokenizer("hba-tiny")(load_prompts())  # full 77-token context
        text = F.normalize(clip.encode_text(tokens), dim=-1)
        image = F.normalize(clip.encode_image(images), dim=-1)
        expected = clip.logit_scale.exp() * image @ text.T
        got = model(images)
    assert got.shape == (3, 66)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    assert model.text_tokens.shape[1] < 77


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_every_adapter_gets_a_gradient_and_changes_the_output(adapter):
    model = tiny(adapter=adapter)
    model.train()
    images = torch.randn(4, 3, model.image_size, model.image_size)
    target = torch.rand(4, 66) * 50
    optimizer = torch.optim.AdamW(model.adapter_parameters(), lr=1e-2)
    for _ in range(2):  # peft DoRA's B starts at zero: A's gradient appears from the second step
        optimizer.zero_grad()
        F.mse_loss(model(images), target).backward()
        optimizer.step()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
    model.eval()
    with torch.no_grad():
        before = model(images)
        for name, param in model.named_parameters():
            if param.requires_grad:
                saved = param.detach().clone()
                param.add_(0.5 * torch.randn_like(param))
                assert not torch.allclose(model(images), before), f"{name} does not affect the output"
                param.copy_(saved)


def test_adapter_on_default_attention_would_be_ignored():
    """The trap this model avoids: nn.MultiheadAttention never calls out_proj.forward."""
    from peft import LoraConfig, inject_adapter_in_model

    register_tiny_backbone()
    torch.manual_seed(0)
    clip = open_clip.create_model("hba-tiny").eval()  # default block type
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = clip.encode_image(images)
    target = "visual.transformer.resblocks.3.attn.out_proj"
    inject_adapter_in_model(LoraConfig(r=2, use_dora=True, target_modules=[target]), clip)
    with torch.no_grad():
        for name, param in clip.named_parameters():
            if "lora_" in name:
                param.add_(torch.randn_like(param))
        assert torch.equal(clip.encode_image(images), before)  # silently unused


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_adapter_state_roundtrip(adapter):
    a, b = tiny(adapter=adapter), tiny(adapter=adapter)
    with torch.no_grad():
        for p in a.adapter_parameters():
            p.add_(torch.randn_like(p))
    b.load_adapter_state_dict(a.adapter_state_dict())
    images = torch.randn(2, 3, a.image_size, a.image_size)
    a.eval(), b.eval()
    assert torch.equal(a(images), b(images))
    with pytest.raises(ValueError):
        b.load_adapter_state_dict({})


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_cached_text_prefix_equals_full_text_tower(adapter):
    """Truncated prompts through cached frozen blocks == all 77 positions through every block."""
    model = tiny(transformer_layers=1, adapter=adapter)
    with torch.no_grad():
        for p in model.adapter_parameters():
            p.add_(0.1 * torch.randn_like(p))  # adapters that change the output
        cached, full = model.text_features(), model.text_features_full()
    assert model.text_prefix.shape[1] < model.text_tokens_full.shape[1]
    torch.testing.assert_close(cached, full, rtol=1e-5, atol=1e-5)


def test_local_checkpoint_of_a_default_block_model_loads_into_custom_blocks(tmp_path):
    """Weights saved from open_clip's default towers (nn.MultiheadAttention) load into the custom
    blocks the adapters need, and give the same outputs (DESIGN.md, trap 1)."""
    register_tiny_backbone()
    torch.manual_seed(1)
    reference = open_clip.create_model("hba-tiny").eval()  # default block type, its own random weights
    path = tmp_path / "hba_tiny_weights.pt"
    torch.save(reference.state_dict(), path)
    model = CLIPHBA(
        backbone="hba-tiny", pretrained=str(path), vision_layers=2, transformer_layers=1, rank=4, adapter="peft_dora"
    ).eval()  # starts as the identity
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        text = F.normalize(reference.encode_text(model.text_tokens_full), dim=-1)
        expected = reference.logit_scale.exp() * F.normalize(reference.encode_image(images), dim=-1) @ text.T
        got = model(images)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-3)
    assert model.prefix_key() != tiny().prefix_key()  # other weights, other frozen-prefix cache entries
