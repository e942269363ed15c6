"""GPU check (not a test: CI has no GPU): on CUDA, the cached path (prefix held in GPU memory) trains
the same run as the uncached one, and the analysis Predictor agrees with `forward`.

    python benchmarks/gpu_exactness.py
"""

import csv
import tempfile
from pathlib import Path

import torch

from hba_sweep.config import load_config, run_dir
from hba_sweep.data.images import ImageStore
from hba_sweep.model import ModelSpec, create_model
from hba_sweep.training import run_training_experiment
from hba_sweep.training.demo_data import make_demo_data
from hba_sweep.training.predict import Predictor

tmp = Path(tempfile.mkdtemp())
train_yaml = make_demo_data(tmp / "demo", n_train=160)


def run(cached: bool) -> list[float]:
    cfg = load_config(
        train_yaml,
        {
            "epochs": 3,
            "device": "cuda",
            "cache_frozen_prefix": cached,
            "progress": False,
            "perturb_type": "image_noise",
            "perturb_epoch": 1,
            "perturb_length": 1,
            "save_path": str(tmp / f"run{cached}"),
        },
    )
    run_training_experiment(cfg)
    with open(run_dir(cfg) / "metrics.csv") as fh:
        return [float(r["val_loss"]) for r in csv.DictReader(fh)]


a, b = run(True), run(False)
print("val_loss cached  ", a)
print("val_loss uncached", b)
print(
    "GPU training cached == uncached (fp32, rel 1e-4):",
    all(abs(x - y) <= 1e-4 * abs(y) for x, y in zip(a, b, strict=False)),
)
paths = sorted((tmp / "demo" / "eval48" / "images").iterdir())
spec = ModelSpec(backbone="hba-tiny", pretrained="none", vision_layers=2, transformer_layers=1, rank=4)
predictor = Predictor(spec, "cuda", None, batch_size=16)
oracle = create_model(spec).cuda().eval()
torch.manual_seed(0)
state = {k: v + 0.1 * torch.randn_like(v) for k, v in oracle.adapter_state_dict().items()}
predictor.load(state)
oracle.load_adapter_state_dict(state)
with torch.no_grad():
    expected = oracle(ImageStore(paths, oracle.image_size).all().cuda()).double().cpu()
got = torch.from_numpy(predictor.predict(paths))
print(
    "analysis Predictor vs oracle on GPU: max |diff| / max |value| =",
    float((got - expected).abs().max() / expected.abs().max()),
    "prefix held as",
    type(predictor.prefix(paths)).__name__,
)
