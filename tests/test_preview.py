"""``preview``: one training batch before and after a perturbation, through the CLI, on the demo data.

Each built-in type changes what it should (and nothing else); the batch and its perturbation are
the ones the training loop uses at that epoch; a type registered by a search-space file works.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hba_sweep.cli import main
from hba_sweep.training import loop
from hba_sweep.training.preview import preview

PNG = b"\x89PNG\r\n\x1a\n"


def run_preview(demo_dir: Path, tmp_path: Path, capsys, kind: str, *extra: str) -> str:
    out = tmp_path / f"{kind}.png"
    assert (
        main(["preview", "--config", str(demo_dir / "train.yaml"), "--perturb-type", kind, "--out", str(out), *extra])
        == 0
    )
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 10_000
    return capsys.readouterr().out


@pytest.mark.parametrize(
    "kind, images, targets, note",
    [
        ("none", 0, 0, "type none never perturbs"),
        ("label_shuffle", 0, 32, "each is another row's target: permuted within the batch"),
        ("random_target", 0, 32, "new values"),
        ("image_noise", 32, 0, "images changed: 32 of 32 (mean"),
        ("uniform_images", 32, 0, "every value 0.5 after normalisation"),
        ("blank_target", 0, 32, "all zeros"),
    ],
)
def test_each_type_changes_what_it_should(demo_dir, tmp_path, capsys, kind, images, targets, note):
    out = run_preview(demo_dir, tmp_path, capsys, kind)
    assert f"images changed: {images} of 32" in out and f"targets changed: {targets} of 32" in out, out
    assert f"rows changed: {max(images, targets)} of 32" in out and note in out, out


def test_fraction_and_window(demo_dir, tmp_path, capsys):
    out = run_preview(demo_dir, tmp_path, capsys, "image_noise", "--set", "perturb_fraction=0.25")
    assert "images changed: 8 of 32" in out and "targets changed: 0 of 32" in out, out
    out = run_preview(demo_dir, tmp_path, capsys, "label_shuffle", "--set", "perturb_epoch=2", "--epoch", "1")
    assert "outside the perturbation window" in out and "rows changed: 0 of 32" in out, out


def test_label_shuffle_permutes_targets_within_the_batch(demo_config):
    result = preview(demo_config(perturb_type="label_shuffle", perturb_epoch=1, perturb_length=2), epoch=2, batch=3)
    assert torch.equal(result.new_images, result.images)
    before = sorted(map(tuple, result.targets.tolist()))
    assert sorted(map(tuple, result.new_targets.tolist())) == before and result.target_rows


def test_the_batch_is_the_one_training_sees(demo_config, monkeypatch):
    """The loop's batch 0 of epoch 1 (names and perturbed targets) is exactly the preview's."""
    cfg = demo_config(perturb_type="label_shuffle", perturb_epoch=1, perturb_length=1, epochs=2, behavioral_rsa=False)
    seen = {}
    original = loop.perturbed_inputs

    def spy(model, train, idx, targets, strategy, epoch, batch_idx, device):
        tokens, new_targets = original(model, train, idx, targets, strategy, epoch, batch_idx, device)
        if batch_idx == 0:
            seen[epoch] = ([train.dataset.names[i] for i in idx.tolist()], new_targets.detach().cpu().clone())
        return tokens, new_targets

    monkeypatch.setattr(loop, "perturbed_inputs", spy)
    loop.run_training_experiment(cfg)
    names, trained_targets = seen[1]
    result = preview(cfg, epoch=1, batch=0)
    assert result.names == names
    assert torch.equal(result.new_targets, trained_targets)


def test_a_registered_custom_type(demo_dir, tmp_path, capsys):
    space = tmp_path / "custom.py"
    space.write_text(f"""
from hba_sweep.perturbations import PerturbationStrategy, register

@register("halve_targets_preview")
class HalveTargets(PerturbationStrategy):
    def replacement_targets(self, targets, epoch_idx, batch_idx):
        return targets * 0.5

BASE_CONFIG = {str(demo_dir / "train.yaml")!r}
PARAM_SPACE = {{"perturb_type": "halve_targets_preview"}}
""")
    out = run_preview(demo_dir, tmp_path, capsys, "halve_targets_preview", "--space", str(space))
    assert "images changed: 0 of 32" in out and "targets changed: 32 of 32" in out, out


def test_unknown_type_and_bad_epoch_are_clear_errors(demo_dir, tmp_path, capsys):
    config = str(demo_dir / "train.yaml")
    assert main(["preview", "--config", config, "--perturb-type", "shuffle_labels"]) == 2
    assert "perturb_type='shuffle_labels' is not a known perturbation" in capsys.readouterr().err
    assert (
        main(
            [
                "preview",
                "--config",
                config,
                "--perturb-type",
                "label_shuffle",
                "--epoch",
                "99",
                "--out",
                str(tmp_path / "x.png"),
            ]
        )
        == 2
    )
    assert "--epoch 99: training runs epochs 0.." in capsys.readouterr().err
