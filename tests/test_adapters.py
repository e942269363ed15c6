"""The two adapters: the published DoRA against an oracle written from its formulas, peft's DoRA
still available, one interface (parameters, state dicts, published checkpoint keys)."""

from __future__ import annotations

import dataclasses
import math

import open_clip
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hba_sweep.artifacts.checkpoint import load_published_adapters
from hba_sweep.foundation.errors import CheckpointError
from hba_sweep.model import CLIPHBA, adapters, load_prompts
from hba_sweep.model.adapters import HBADoRALinear
from hba_sweep.model.backbones import backbone_depths, create_clip

HBA_SUFFIXES = ("m", "delta_D_A", "delta_D_B")


def tiny(**kw) -> CLIPHBA:
    torch.manual_seed(0)
    args = dict(backbone="hba-tiny", pretrained="none", vision_layers=2, transformer_layers=1, rank=4)
    return CLIPHBA(**{**args, **kw})


# ---- the oracle: the published formulas on plain tensors (float64) -------------------------
def oracle_weight(W, m, A, B, alpha, r):
    """W' = m * D' / (||D'_row|| + 1e-8), D' = W / ||W_row|| + (alpha / r) * (B @ A)^T."""
    D = W / torch.sqrt((W**2).sum(dim=1, keepdim=True))
    D_new = D + (alpha / r) * torch.einsum("ik,ko->oi", B, A)
    return m.unsqueeze(1) * D_new / (torch.sqrt((D_new**2).sum(dim=1, keepdim=True)) + 1e-8)


def oracle_linear(x, W, b, m, A, B, alpha, r):
    return torch.einsum("ni,oi->no", x, oracle_weight(W, m, A, B, alpha, r)) + b


def random_layer(out_f=6, in_f=5, r=3, alpha=16.0, seed=0) -> tuple[nn.Linear, HBADoRALinear]:
    torch.manual_seed(seed)
    base = nn.Linear(in_f, out_f)
    layer = HBADoRALinear(base, r, alpha)
    with torch.no_grad():
        layer.m.mul_(1 + 0.3 * torch.rand_like(layer.m))  # trained-looking magnitudes, not W's norms
    return base, layer


@pytest.mark.parametrize("alpha,r", [(16.0, 3), (4.0, 2)])
def test_output_and_gradients_match_the_formulas(alpha, r):
    base, layer = random_layer(r=r, alpha=alpha)
    layer.double()
    x = torch.randn(7, 5, dtype=torch.float64)
    upstream = torch.randn(7, 6, dtype=torch.float64)
    out = layer(x)
    (out * upstream).sum().backward()

    W, b = base.weight.detach().double(), base.bias.detach().double()
    m, A, B = (getattr(layer, t).detach().clone().requires_grad_(True) for t in HBA_SUFFIXES)
    expected = oracle_linear(x, W, b, m, A, B, alpha, r)
    (expected * upstream).sum().backward()
    # D is stored in float32 (from W): agreement to float32 precision
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-7)
    for name, ref in zip(HBA_SUFFIXES, (m, A, B), strict=False):
        torch.testing.assert_close(getattr(layer, name).grad, ref.grad, rtol=1e-6, atol=1e-7, msg=name)
    # d out_o / d m_o = x . unit(D'_o): the magnitude scales a unit direction
    unit = oracle_weight(W, torch.ones(6, dtype=torch.float64), A.detach(), B.detach(), alpha, r)
    torch.testing.assert_close(layer.m.grad, ((x @ unit.T) * upstream).sum(0), rtol=1e-6, atol=1e-7)
    assert base.weight.grad is None and layer.bias.grad is None  # frozen


def test_gradient_flows_through_the_row_norm():
    """Autograd agrees with finite differences, and differs from a detached-norm variant."""
    _, layer = random_layer()
    layer.double()
    x = torch.randn(4, 5, dtype=torch.float64)
    D = layer.D

    def f(m, A, B):
        D_new = D + layer.scaling * (B @ A).t()
        return F.linear(x, m[:, None] * D_new / (D_new.norm(dim=1, keepdim=True) + 1e-8), layer.bias)

    params = tuple(getattr(layer, t).detach().clone().requires_grad_(True) for t in HBA_SUFFIXES)
    assert torch.autograd.gradcheck(lambda m, A, B: layer_with(layer, m, A, B)(x), params)

    def detached(m, A, B):
        D_new = D + layer.scaling * (B @ A).t()
        return F.linear(x, m[:, None] * D_new / (D_new.norm(dim=1, keepdim=True).detach() + 1e-8), layer.bias)

    g_true = torch.autograd.grad(f(*params).sum(), params[1])[0]
    g_detached = torch.autograd.grad(detached(*params).sum(), params[1])[0]
    g_module = torch.autograd.grad(layer_with(layer, *params)(x).sum(), params[1])[0]
    torch.testing.assert_close(g_module, g_true)
    assert not torch.allclose(g_module, g_detached, rtol=1e-3, atol=1e-6)


def layer_with(layer: HBADoRALinear, m, A, B):
    """The layer's forward with the given tensors in place of its parameters."""
    return lambda x: torch.func.functional_call(layer, {"m": m, "delta_D_A": A, "delta_D_B": B}, (x,))


def test_initialisation_statistics():
    torch.manual_seed(0)
    out_f, in_f, r = 384, 512, 64
    base = nn.Linear(in_f, out_f)
    layer = HBADoRALinear(base, r)
    torch.testing.assert_close(layer.m, base.weight.norm(dim=1))
    torch.testing.assert_close(layer.D.norm(dim=1), torch.ones(out_f))
    for tensor, fan_in in (
        (layer.delta_D_A.detach(), out_f),
        (layer.delta_D_B.detach(), r),
    ):  # U(-1/sqrt(fan), 1/sqrt(fan))
        bound = 1 / math.sqrt(fan_in)
        assert tensor.abs().max() <= bound and tensor.abs().max() > 0.95 * bound
        assert abs(float(tensor.mean())) < 0.05 * bound
        assert float(tensor.var()) == pytest.approx(bound**2 / 3, rel=0.1)
    assert layer.scaling == 16 / r and layer.bias.requires_grad is False
    assert {n for n, p in layer.named_parameters() if p.requires_grad} == set(HBA_SUFFIXES)
    x = torch.randn(3, in_f)
    assert not torch.allclose(layer(x), base(x), atol=1e-3)  # neither factor is zero: not the identity
    with torch.no_grad():
        layer.delta_D_B.zero_()
    torch.testing.assert_close(layer(x), base(x), rtol=1e-5, atol=1e-5)  # m * D is W


def test_dropout_acts_on_the_update_in_train_mode_only():
    torch.manual_seed(0)
    base = nn.Linear(5, 6)
    layer = HBADoRALinear(base, 3, dropout=0.5)
    x = torch.randn(2, 5)
    delta = layer.scaling * (layer.delta_D_B @ layer.delta_D_A)
    layer.eval()
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
    layer.train()
    torch.manual_seed(1)
    got = layer(x)
    torch.manual_seed(1)
    dropped = F.dropout(delta, 0.5, training=True)
    torch.testing.assert_close(got, F.linear(x, layer._weight(dropped), layer.bias))


# ---- in CLIPHBA ---------------------------------------------------------------------------
@pytest.mark.parametrize("vision_layers,transformer_layers", [(2, 1), (1, 3), (0, 2), (4, 0)])
@pytest.mark.parametrize("adapter", adapters.ADAPTERS)
def test_exact_parameter_set(adapter, vision_layers, transformer_layers):
    model = tiny(adapter=adapter, vision_layers=vision_layers, transformer_layers=transformer_layers)
    n_vis, n_txt = backbone_depths("hba-tiny")
    modules = [f"clip.visual.transformer.resblocks.{i}.attn.out_proj" for i in range(n_vis - vision_layers, n_vis)]
    modules += [f"clip.transformer.resblocks.{i}.attn.out_proj" for i in range(n_txt - transformer_layers, n_txt)]
    suffixes = (
        HBA_SUFFIXES
        if adapter == "hba_dora"
        else ("lora_A.default.weight", "lora_B.default.weight", "lora_magnitude_vector.default.weight")
    )
    expected = {f"{m}.{s}" for m in modules for s in suffixes}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == expected == set(model.adapter_state_dict())
    assert len(model.adapter_parameters()) == len(expected)


@pytest.mark.parametrize("adapter", adapters.ADAPTERS)
def test_every_adapter_tensor_gets_a_gradient_at_initialisation(adapter):
    model = tiny(adapter=adapter)
    model.train()
    images = torch.randn(3, 3, model.image_size, model.image_size)
    F.mse_loss(model(images), torch.rand(3, 66) * 50).backward()
    for name, param in adapters.named_adapter_parameters(model):
        zero_b = adapter == "peft_dora" and "lora_A" in name  # peft: B starts at zero, so A's first gradient is 0
        assert param.grad is not None and (zero_b or param.grad.abs().sum() > 0), name


def backbone_predictions(clip, images, tokens):
    with torch.no_grad():
        text = F.normalize(clip.encode_text(tokens), dim=-1)
        return clip.logit_scale.exp() * F.normalize(clip.encode_image(images), dim=-1) @ text.T


def test_initial_model_differs_from_backbone_for_hba_dora_only():
    images = torch.randn(2, 3, 64, 64)
    raw = create_clip("hba-tiny", "none")
    tokens = open_clip.get_tokenizer("hba-tiny")(load_prompts())
    expected = backbone_predictions(raw, images, tokens)
    with torch.no_grad():
        hba = tiny(adapter="hba_dora").eval()(images)
        peft = tiny(adapter="peft_dora").eval()(images)
    torch.testing.assert_close(peft, expected, rtol=1e-5, atol=1e-4)  # peft's DoRA starts as the identity
    assert (hba - expected).abs().max() > 1e-2  # the published DoRA does not


def write_published_checkpoint(path, model: CLIPHBA, seed: int = 5) -> dict[str, torch.Tensor]:
    """A dict of tensors under the published keys, saved with torch.save as the published code does."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name in model.adapted_modules:
        layer = model.clip.get_submodule(name)
        state[f"clip_model.{name}.m"] = layer.m.detach() * (1 + 0.2 * torch.rand(layer.m.shape, generator=gen))
        state[f"clip_model.{name}.delta_D_A"] = torch.randn(layer.delta_D_A.shape, generator=gen) * 0.1
        state[f"clip_model.{name}.delta_D_B"] = torch.randn(layer.delta_D_B.shape, generator=gen) * 0.1
    torch.save(state, path)
    return state


def test_published_checkpoint_gives_the_formula_predictions(tmp_path):
    model = tiny(rank=3, vision_layers=2, transformer_layers=2).eval()
    state = write_published_checkpoint(tmp_path / "epoch7_dora_params.pth", model)
    model.load_adapter_state_dict(load_published_adapters(tmp_path / "epoch7_dora_params.pth"))

    raw = create_clip("hba-tiny", "none")  # same frozen weights; out_proj weights set from the formulas
    with torch.no_grad():
        for name in model.adapted_modules:
            linear = raw.get_submodule(name)
            W = linear.weight.double()
            m, A, B = (state[f"clip_model.{name}.{t}"].double() for t in HBA_SUFFIXES)
            linear.weight.copy_(oracle_weight(W, m, A, B, 16.0, 3))
    images = torch.randn(2, 3, 64, 64)
    expected = backbone_predictions(raw, images, model.text_tokens_full)
    with torch.no_grad():
        torch.testing.assert_close(model(images), expected, rtol=1e-5, atol=1e-4)
        model.set_plan(dataclasses.replace(model.plan, cache_text=True))
        torch.testing.assert_close(
            model.forward_from_prefix(model.vision_prefix(images)), expected, rtol=1e-5, atol=1e-4
        )


def test_published_keys_round_trip():
    model = tiny(vision_layers=1, transformer_layers=2)
    own = model.adapter_state_dict()
    published = adapters.to_published_keys(own)
    assert set(published) == {"clip_model." + k.removeprefix("clip.") for k in own}
    assert all(adapters.PUBLISHED_KEY.match(k) for k in published)
    back = adapters.from_published_keys(published)
    assert back.keys() == own.keys() and all(torch.equal(back[k], own[k]) for k in own)
    with pytest.raises(KeyError):
        adapters.to_published_keys(tiny(adapter="peft_dora").adapter_state_dict())


@pytest.mark.parametrize(
    "mutate,needle",
    [
        (lambda s: s.pop(next(k for k in s if k.endswith(".m"))), "lacks"),
        (lambda s: s.update({"clip_model.visual.proj": torch.zeros(1)}), "unexpected key"),
        (lambda s: s.update({k: torch.zeros(2, 2) for k in list(s) if k.endswith("delta_D_A")}), "shapes"),
    ],
)
def test_malformed_published_checkpoint_is_refused_naming_the_file(tmp_path, mutate, needle):
    model = tiny()
    path = tmp_path / "epoch3_dora_params.pth"
    state = write_published_checkpoint(path, model)
    mutate(state)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=needle) as info:
        load_published_adapters(path)
    assert str(path) in str(info.value)


def test_pickled_code_in_a_published_checkpoint_is_not_run(tmp_path):
    path = tmp_path / "epoch0_dora_params.pth"
    torch.save({"x": Exploit(tmp_path / "ran")}, path)
    with pytest.raises(CheckpointError, match=str(path)):
        load_published_adapters(path)
    assert not (tmp_path / "ran").exists()


class Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.target}",)


@pytest.mark.parametrize("held,built", [("peft_dora", "hba_dora"), ("hba_dora", "peft_dora")])
def test_loading_the_other_adapter_kind_is_a_clear_error(held, built):
    state = tiny(adapter=held).adapter_state_dict()
    with pytest.raises(CheckpointError, match=f"holds {held} adapters.*adapter: {held}"):
        tiny(adapter=built).load_adapter_state_dict(state)


def test_adapter_state_round_trip_and_shape_check():
    a, b = tiny(), tiny(rank=2)
    with torch.no_grad():
        for p in a.adapter_parameters():
            p.add_(torch.randn_like(p))
    with pytest.raises(ValueError, match="shapes"):
        b.load_adapter_state_dict(a.adapter_state_dict())
    c = tiny()
    c.load_adapter_state_dict(a.adapter_state_dict())
    images = torch.randn(2, 3, 64, 64)
    a.eval(), c.eval()
    with torch.no_grad():
        assert torch.equal(a(images), c(images))


@pytest.mark.parametrize("adapter", adapters.ADAPTERS)
def test_prefix_split_is_exact_in_float64(adapter):
    """Cached vision prefix + truncated text prefix == the full path; in float64 to 1e-10, so the
    float32 differences (about 1e-5 on logit_scale * cos) are rounding only."""
    model = tiny(adapter=adapter, transformer_layers=3, rank=8).eval()
    with torch.no_grad():
        for p in model.adapter_parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.double()
    model.recompute_text_prefix()
    images = torch.randn(6, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        full = model(images)
        cached = torch.cat([model.forward_from_prefix(model.vision_prefix(images[i : i + 4])) for i in (0, 4)])
    torch.testing.assert_close(cached, full, rtol=0, atol=1e-10)


def test_checkpoints_record_their_adapter_and_older_ones_read_as_peft(demo_config, tmp_path):
    """meta.json names the adapter; a checkpoint written before it did (peft_dora then) resumes only
    as peft_dora, with a fix naming the key; its adapters still load into a peft_dora predictor."""
    import json

    from hba_sweep.artifacts import checkpoint as ckpt
    from hba_sweep.config import run_dir
    from hba_sweep.foundation.errors import ConfigError
    from hba_sweep.model import ModelSpec, create_model
    from hba_sweep.training import run_training_experiment

    old = demo_config(epochs=1, adapter="peft_dora", behavioral_rsa=False)
    run_training_experiment(old)
    for epoch in ckpt.list_epochs(run_dir(old)):
        path = ckpt.epoch_dir(run_dir(old), epoch) / ckpt.META_FILE
        meta = json.loads(path.read_text())
        assert meta["adapter"] == meta["config"]["adapter"] == "peft_dora"
        del meta["adapter"], meta["config"]["adapter"]  # as written before the kind was recorded
        path.write_text(json.dumps(meta))
    last = ckpt.epoch_dir(run_dir(old), 0)
    assert ckpt.read_meta(last)["config"]["adapter"] == "peft_dora"
    with pytest.raises(ConfigError, match="adapter: 'peft_dora' -> 'hba_dora'"):
        run_training_experiment(demo_config(epochs=2, behavioral_rsa=False, resume_from=str(run_dir(old))))
    model = create_model(ModelSpec.from_mapping(ckpt.read_meta(last)["config"]))
    assert model.adapter == "peft_dora"
    model.load_adapter_state_dict(ckpt.load_adapters(last))
