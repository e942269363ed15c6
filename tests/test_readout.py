"""Readout-only last blocks: the cached path equals the oracle (every block at every position).

The oracle is ``CLIPHBA.forward`` (or the same model with ``readout_only`` off), compared in
float64 to 1e-10 (so that float32's differences are rounding only) and in float32 to 1e-5 of the
largest value, with both adapters (the published DoRA and peft's); the backbone
variants turn on every option of open_clip's custom block (layer scale, ln_attn, inner norm,
head scaling, qk norm, MLP norm, final LN after pooling, eos and non-causal 'last' text pooling),
with every parameter of the last blocks randomised so that a skipped or swapped step shows.
"""

from __future__ import annotations

import dataclasses
import json
import logging

import open_clip
import pytest
import torch
import torch.nn.functional as F

from hba_sweep.model import CLIPHBA, ForwardPlan, ModelSpec, adapters, create_model
from hba_sweep.model.backbones import register_tiny_backbone

TINY = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 4, "width": 128, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 3},
    "init_logit_scale": 4.605170185988092,
}
BLOCK_OPTIONS = {
    "ls_init_value": 0.5,
    "qk_norm": True,
    "scale_heads": True,
    "scale_attn_inner": True,
    "scale_attn": True,
    "scale_fc": True,
}
VARIANTS = {
    "options": (
        {**BLOCK_OPTIONS, "final_ln_after_pool": True, "no_ln_pre": True},
        {**BLOCK_OPTIONS, "pool_type": "eos", "eos_id": 49407},
    ),
    "bidirectional-last": ({}, {"no_causal_mask": True, "pool_type": "last"}),
    "mean-pool": ({"pool_type": "avg"}, {}),
    "attention-pool": ({"attentional_pool": True, "attn_pooler_queries": 1, "attn_pooler_heads": 4}, {}),
}


def register_variant(tmp_path_factory: pytest.TempPathFactory, name: str) -> str:
    vision, text = VARIANTS[name]
    cfg = json.loads(json.dumps(TINY))
    cfg["vision_cfg"].update(vision)
    cfg["text_cfg"].update(text)
    path = tmp_path_factory.mktemp("configs") / f"hba-tiny-{name}.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(str(path))
    return path.stem


TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}


def build(
    backbone: str = "hba-tiny",
    vision_layers: int = 2,
    transformer_layers: int = 1,
    adapter: str = adapters.DEFAULT_ADAPTER,
    dtype: torch.dtype = torch.float64,
) -> CLIPHBA:
    """A model whose adapters and last blocks all carry random, non-trivial values."""
    register_tiny_backbone()
    torch.manual_seed(0)
    model = CLIPHBA(
        backbone=backbone,
        pretrained="none",
        vision_layers=vision_layers,
        transformer_layers=transformer_layers,
        rank=4,
        dora_dropout=0.0,
        adapter=adapter,
    )
    trained = {id(p) for p in model.adapter_parameters()}
    last_blocks = [model.clip.visual.transformer.resblocks[-1], model.clip.transformer.resblocks[-1]]
    with torch.no_grad():
        for param in model.adapter_parameters():
            param.add_(0.3 * torch.randn_like(param) * (param.abs().mean() + 0.1))
        for block in last_blocks:
            for param in block.parameters():
                if id(param) not in trained:
                    param.add_(0.2 * torch.randn_like(param) * (param.abs().mean() + 0.1))
    model.to(dtype)
    model.recompute_text_prefix()  # the frozen text state, of the changed weights
    return model


def paths_agree(model: CLIPHBA, n_images: int = 3) -> None:
    """Readout-only cached path vs the oracle: predictions and every adapter gradient."""
    dtype = model.text_prefix.dtype
    images = torch.randn(n_images, 3, model.image_size, model.image_size, dtype=dtype)
    targets = torch.rand(n_images, 66, dtype=dtype) * 50
    params = model.adapter_parameters()
    oracle = model(images)
    oracle_grads = torch.autograd.grad(F.mse_loss(oracle, targets), params)
    model.set_plan(dataclasses.replace(model.plan, readout_only=True))
    cached = model.forward_from_prefix(model.vision_prefix(images))
    cached_grads = torch.autograd.grad(F.mse_loss(cached, targets), params)
    assert_close_to_scale(cached, oracle, TOLERANCE[dtype])
    for g_cached, g_oracle in zip(cached_grads, oracle_grads, strict=False):
        assert_close_to_scale(g_cached, g_oracle, TOLERANCE[dtype])


def assert_close_to_scale(got: torch.Tensor, expected: torch.Tensor, tol: float = 1e-5) -> None:
    """Equal within ``tol`` of the tensor's largest magnitude (sums over many terms round)."""
    scale = float(expected.detach().abs().max())
    assert scale > 0
    torch.testing.assert_close(got, expected, rtol=0, atol=tol * scale)


@pytest.mark.parametrize("adapter", adapters.ADAPTERS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("vision_layers,transformer_layers", [(2, 1), (1, 2), (4, 3), (0, 1), (2, 0)])
def test_readout_path_equals_oracle_on_tiny(vision_layers, transformer_layers, dtype, adapter):
    model = build(vision_layers=vision_layers, transformer_layers=transformer_layers, adapter=adapter, dtype=dtype)
    assert model.readout_fallbacks == {}
    paths_agree(model)


@pytest.mark.parametrize("adapter", adapters.ADAPTERS)
@pytest.mark.parametrize("variant", ["options", "bidirectional-last"])
def test_readout_path_equals_oracle_with_block_options(tmp_path_factory, variant, adapter):
    model = build(register_variant(tmp_path_factory, variant), adapter=adapter)
    assert model.readout_fallbacks == {}
    if variant == "bidirectional-last":  # no causal mask: truncating the prompts would not be exact
        assert model.text_tokens.shape[1] == 77
    paths_agree(model, n_images=2)


@pytest.mark.parametrize("variant", ["mean-pool", "attention-pool"])
def test_other_vision_pooling_falls_back_to_the_full_block(tmp_path_factory, caplog, variant):
    with caplog.at_level(logging.WARNING, logger="hba_sweep.model"):
        model = build(register_variant(tmp_path_factory, variant))
    assert set(model.readout_fallbacks) == {"vision"}
    lines = [r.getMessage() for r in caplog.records if r.name == "hba_sweep.model"]
    assert len(lines) == 1 and "vision block runs at every position" in lines[0]
    paths_agree(model, n_images=2)


def test_readout_only_changes_what_the_last_block_computes():
    """The readout path really skips work: the last vision block's MLP sees one token per image."""
    model = build(dtype=torch.float32)
    seen = []
    hook = model.clip.visual.transformer.resblocks[-1].mlp.register_forward_hook(
        lambda m, i, o: seen.append(i[0].shape)
    )
    tokens = model.vision_prefix(torch.randn(3, 3, 64, 64))
    model.vision_suffix(tokens, readout_only=True)
    model.vision_suffix(tokens, readout_only=False)
    hook.remove()
    assert seen == [torch.Size([3, 128]), torch.Size([3, 17, 128])]


@pytest.mark.parametrize("vision_layers,transformer_layers", [(2, 1), (1, 2)])
def test_first_adapted_blocks_start_from_their_cached_attention(vision_layers, transformer_layers):
    """The first adapted block's attention (ln_1 up to out_proj's input) depends on the frozen prefix only:
    it is computed with the prefix, never in a step; the step still runs the adapted out_proj. With
    cache_attention off the state is the stream alone and the block runs whole; both equal the oracle."""
    model = build(vision_layers=vision_layers, transformer_layers=transformer_layers, dtype=torch.float32)
    first_vision = model.clip.visual.transformer.resblocks[model.vision_split]
    first_text = model.clip.transformer.resblocks[model.text_split]
    images = torch.randn(3, 3, 64, 64)
    state = model.vision_prefix(images)
    tokens = 1 if vision_layers == 1 else 17  # the class token alone when the first block is read out there
    assert state.shape == (3, 2, tokens, 128)
    calls = []
    hooks = [
        m.register_forward_hook(lambda m, i, o, name=name: calls.append(name))
        for name, m in [
            ("vision ln_1", first_vision.ln_1),
            ("vision out_proj", first_vision.attn.out_proj),
            ("text ln_1", first_text.ln_1),
            ("text out_proj", first_text.attn.out_proj),
        ]
    ]
    model.forward_from_prefix(state)
    assert sorted(calls) == ["text out_proj", "vision out_proj"]
    model.set_plan(ForwardPlan(cache_attention=False))
    stream = model.vision_prefix(images)
    assert stream.shape == (3, 17, 128)
    calls.clear()
    off = model.forward_from_prefix(stream)
    assert sorted(calls) == ["text ln_1", "text out_proj", "vision ln_1", "vision out_proj"]
    for hook in hooks:
        hook.remove()
    model.set_plan(ForwardPlan(cache_attention=True))
    assert_close_to_scale(off, model(images))
    paths_agree(model)
    assert model.prefix_key() != (model.set_plan(ForwardPlan(cache_attention=False)) or model.prefix_key())


@pytest.mark.parametrize("adapter", adapters.ADAPTERS)
def test_readout_on_the_study_architecture(adapter):
    """ViT-B-32 with QuickGELU (the OpenAI architecture), random weights, two images, float32."""
    torch.manual_seed(0)
    model = CLIPHBA(
        backbone="ViT-B-32-quickgelu",
        pretrained="none",
        vision_layers=2,
        transformer_layers=1,
        rank=4,
        dora_dropout=0.0,
        adapter=adapter,
    )
    assert model.readout_fallbacks == {}
    with torch.no_grad():
        for param in model.adapter_parameters():
            param.add_(0.05 * torch.randn_like(param) * (param.abs().mean() + 0.1))
    tokens = model.vision_prefix(torch.randn(2, 3, 224, 224))
    targets = torch.rand(2, 66) * 50
    outs, grads = [], []
    for readout_only in (False, True):
        model.set_plan(ForwardPlan(readout_only=readout_only))
        out = model.forward_from_prefix(tokens)
        outs.append(out)
        grads.append(torch.autograd.grad(F.mse_loss(out, targets), model.adapter_parameters()))
    assert_close_to_scale(outs[1], outs[0])
    for g_readout, g_full in zip(*grads[::-1], strict=False):
        assert_close_to_scale(g_readout, g_full)


@pytest.mark.parametrize("adapter", adapters.ADAPTERS)
@pytest.mark.parametrize("vision_layers", [1, 2])
def test_analysis_predictor_equals_oracle(demo_dir, adapter, vision_layers):
    """The analysis path (prefix once, readout-only suffix per checkpoint) vs ``forward`` on images."""
    from hba_sweep.data.images import ImageStore
    from hba_sweep.training.predict import Predictor

    paths = sorted((demo_dir / "eval48" / "images").iterdir())[:10]
    spec = ModelSpec(
        backbone="hba-tiny",
        pretrained="none",
        adapter=adapter,
        vision_layers=vision_layers,
        transformer_layers=1,
        rank=4,
    )
    predictor = Predictor(spec, "cpu", None, batch_size=4)
    oracle = create_model(spec).eval()
    images = ImageStore(paths, oracle.image_size).all()
    torch.manual_seed(1)
    for _ in range(2):  # two checkpoints through one predictor
        state = {
            k: v + 0.3 * torch.randn_like(v) * (v.abs().mean() + 0.1) for k, v in oracle.adapter_state_dict().items()
        }
        predictor.load(state)
        oracle.load_adapter_state_dict(state)
        with torch.no_grad():
            expected = oracle(images).double()
        assert_close_to_scale(torch.from_numpy(predictor.predict(paths)), expected)
