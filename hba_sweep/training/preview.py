"""What a perturbation does to one training batch, exactly as the training loop would see it.

The batch is the one ``run_training_experiment`` draws: the published split (``fresh_state``),
the shuffle generator seeded with ``random_seed`` and advanced through the epochs before
``epoch`` (``split.epoch_order``), rows ``batch * batch_size ...`` of that epoch's order. The
strategy is the product's (``choose_perturbation_strategy`` with the config's seeds, window and
fraction, and the scalar target mean/std over all training targets). :func:`preview` returns the
batch before and after and what changed; :func:`draw` puts both on one PNG (images as a grid,
targets as a 66-column heatmap).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hba_sweep.config import TrainConfig
from hba_sweep.data import ThingsDataset
from hba_sweep.data.images import IMAGE_MEAN, IMAGE_STD
from hba_sweep.foundation.errors import ConfigError
from hba_sweep.model.backbones import backbone_config
from hba_sweep.training.run_inputs import run_strategy
from hba_sweep.training.run_start import fresh_state
from hba_sweep.training.split import epoch_order

MAX_SHOWN = 32  # images in each grid of the picture


@dataclass
class BatchPreview:
    """One training batch before and after the perturbation."""

    config: TrainConfig
    epoch: int
    batch: int
    active: bool
    names: list[str]
    images: torch.Tensor  # normalised, B x 3 x H x W
    targets: torch.Tensor  # B x 66
    new_images: torch.Tensor
    new_targets: torch.Tensor

    @property
    def image_rows(self) -> list[int]:
        return torch.nonzero((self.new_images != self.images).flatten(1).any(dim=1)).flatten().tolist()

    @property
    def target_rows(self) -> list[int]:
        return torch.nonzero((self.new_targets != self.targets).any(dim=1)).flatten().tolist()

    def summary(self) -> list[str]:
        """What changed, for the terminal: window, rows, images, targets."""
        cfg, size = self.config, len(self.names)
        window = f"[{cfg.perturb_epoch}, {cfg.perturb_epoch + cfg.perturb_length})"
        lines = [
            (
                f"{cfg.perturb_type}: epoch {self.epoch}, batch {self.batch} ({size} images of the training split); "
                f"window {window}, perturb_fraction {cfg.perturb_fraction:g}, perturb_seed {cfg.perturb_seed}"
            )
        ]
        if cfg.perturb_type == "none":
            lines.append("type none never perturbs: training sees this batch unchanged")
        elif not self.active:
            lines.append(f"epoch {self.epoch} is outside the perturbation window: training sees this batch unchanged")
        rows = sorted(set(self.image_rows) | set(self.target_rows))
        lines.append(f"rows changed: {len(rows)} of {size}" + (f" ({_rows(rows)})" if rows else ""))
        lines.append(f"images changed: {len(self.image_rows)} of {size}" + self._image_note())
        lines.append(f"targets changed: {len(self.target_rows)} of {size}" + self._target_note())
        return lines

    def _image_note(self) -> str:
        if not self.image_rows:
            return " (identical)"
        changed = self.new_images[self.image_rows]
        if bool((changed == changed.flatten()[0]).all()):
            return f" (every value {float(changed.flatten()[0]):g} after normalisation)"
        return f" (mean {float(changed.mean()):.3f}, std {float(changed.std()):.3f} after normalisation)"

    def _target_note(self) -> str:
        rows = self.target_rows
        if not rows:
            return " (identical)"
        old = {tuple(r) for r in self.targets.tolist()}
        if all(tuple(r) in old for r in self.new_targets[rows].tolist()):
            return " (each is another row's target: permuted within the batch)"
        if bool((self.new_targets[rows] == 0).all()):
            return " (all zeros)"
        new = self.new_targets[rows]
        return f" (new values: mean {float(new.mean()):.3f}, std {float(new.std()):.3f})"


def _rows(rows: list[int]) -> str:
    return ", ".join(map(str, rows[:12])) + (", ..." if len(rows) > 12 else "")


def image_size(cfg: TrainConfig) -> int:
    size = backbone_config(cfg.backbone, cfg.pretrained)["vision_cfg"]["image_size"]
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def preview(cfg: TrainConfig, epoch: int | None = None, batch: int = 0) -> BatchPreview:
    """The batch training draws at ``epoch`` (default: the window's first) and what the strategy makes of it."""
    epoch = cfg.perturb_epoch if epoch is None else epoch
    if epoch < 0 or epoch >= cfg.epochs:
        raise ConfigError(f"--epoch {epoch}: training runs epochs 0..{cfg.epochs - 1}. Fix: give one of them.")
    dataset = ThingsDataset(cfg.img_annotations_file, cfg.img_dir, image_size(cfg))
    state = fresh_state(cfg, dataset)
    shuffle = torch.Generator().set_state(state.shuffle_generator)
    train_rows = torch.as_tensor(state.train_indices)
    for _ in range(epoch):  # the order of every earlier epoch, as the loop draws them
        epoch_order(len(train_rows), shuffle)
    order = train_rows[epoch_order(len(train_rows), shuffle)]
    batches = math.ceil(len(order) / cfg.batch_size)
    if not 0 <= batch < batches:
        raise ConfigError(f"--batch {batch}: epoch {epoch} has batches 0..{batches - 1}. Fix: give one of them.")
    idx = order[batch * cfg.batch_size : (batch + 1) * cfg.batch_size]
    strategy = run_strategy(cfg, dataset.targets)
    images, targets = dataset.images(idx), dataset.targets[idx]
    active = strategy.is_active_epoch(epoch)
    new_images, new_targets = (
        strategy.apply_to_batch(images, targets, torch.device("cpu"), epoch, batch) if active else (images, targets)
    )
    return BatchPreview(
        cfg, epoch, batch, active, [dataset.names[i] for i in idx.tolist()], images, targets, new_images, new_targets
    )


def _grid(images: torch.Tensor) -> np.ndarray:
    """Normalised images (at most MAX_SHOWN) as one RGB array, a row of 8 per line."""
    shown = images[:MAX_SHOWN].float()
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    rgb = (shown * std + mean).clamp(0, 1)
    n, _, h, w = rgb.shape
    cols = min(8, n)
    rows = math.ceil(n / cols)
    canvas = torch.ones(3, rows * (h + 2), cols * (w + 2))
    for i in range(n):
        r, c = divmod(i, cols)
        canvas[:, r * (h + 2) : r * (h + 2) + h, c * (w + 2) : c * (w + 2) + w] = rgb[i]
    return canvas.permute(1, 2, 0).numpy()


def draw(result: BatchPreview, out: str | Path) -> Path:
    """The PNG: images before / after (top), targets before / after as heatmaps (bottom)."""
    fig = Figure(figsize=(14, 11), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2, height_ratios=[1, 1.2])
    changed_i, changed_t = len(result.image_rows), len(result.target_rows)
    size = len(result.names)
    for ax, images, title in (
        (axes[0, 0], result.images, "images before"),
        (axes[0, 1], result.new_images, f"images after ({changed_i} of {size} changed)"),
    ):
        ax.imshow(_grid(images))
        ax.set_title(title + (f"; first {MAX_SHOWN} shown" if size > MAX_SHOWN else ""))
        ax.axis("off")
    both = torch.cat([result.targets, result.new_targets]).float()
    low, high = float(both.min()), float(both.max())
    for ax, targets, title in (
        (axes[1, 0], result.targets, "targets before"),
        (axes[1, 1], result.new_targets, f"targets after ({changed_t} of {size} rows changed)"),
    ):
        shown = ax.imshow(
            targets.float().numpy(), aspect="auto", cmap="viridis", vmin=low, vmax=high, interpolation="nearest"
        )
        ax.set_title(title)
        ax.set_xlabel("embedding dimension (66)")
        ax.set_ylabel("row of the batch")
        for row in result.target_rows if targets is result.new_targets else []:
            ax.plot([-0.5], [row], marker=">", color="red", markersize=4, clip_on=False)
    fig.colorbar(shown, ax=axes[1, :], shrink=0.8, label="target value")
    cfg = result.config
    fig.suptitle(
        f"{cfg.perturb_type} at epoch {result.epoch}, batch {result.batch} "
        f"(window [{cfg.perturb_epoch}, {cfg.perturb_epoch + cfg.perturb_length}), "
        f"perturb_seed {cfg.perturb_seed}, fraction {cfg.perturb_fraction:g})"
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    return out
