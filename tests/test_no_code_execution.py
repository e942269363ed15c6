"""No code execution from data (issue 6, part 4).

A checkpoint file replaced by a pickle whose ``__reduce__`` creates a marker file must be
refused -- by resume (``train --resume``), fork, ``infer`` and ``analyze`` -- with a clear error
and without the marker ever appearing. The attacker is assumed to be able to rewrite
``meta.json`` as well, so the recorded SHA-256 matches the malicious file and the loader itself
(``torch.load(weights_only=True)``, safetensors) is what has to refuse it.

Source scans: every ``torch.load(`` passes ``weights_only=True``, YAML is read with
``yaml.safe_load`` only, and nothing calls ``pickle.load(s)`` or ``np.load(allow_pickle=True)``.
"""

from __future__ import annotations

import ast
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import write_small_run_config

from hba_sweep import cli
from hba_sweep.artifacts.checkpoint import ADAPTER_FILE, META_FILE, STATE_FILE

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("hba_sweep", "analysis", "trainables", "search_spaces")


class Payload:
    """Unpickling this opens ``marker`` for writing (creating it): the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def invoke(argv: list[Any]) -> int:
    try:
        return int(cli.main([str(a) for a in argv]))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


def plant(path: Path, marker: Path, rehash: bool = True) -> None:
    """Replace ``path`` by a malicious (torch-format) pickle; optionally make meta.json vouch for it."""
    torch.save({"epoch": 0, "optimizer": Payload(marker)}, path)
    if rehash:
        meta_path = path.parent / META_FILE
        meta = json.loads(meta_path.read_text())
        meta["sha256"][path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
        meta_path.write_text(json.dumps(meta))


@dataclass(frozen=True)
class Prior:
    config: Path  # the run's YAML (save_path = source/results)
    source: Path  # a pristine copy of the results folder; each test copies it
    run_name: str


@pytest.fixture(scope="module")
def prior(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Prior:
    """One tiny training run (epochs=1, 40 images), made once."""
    root = tmp_path_factory.mktemp("nocode")
    config, _, _ = write_small_run_config(demo_dir, root, "safe_run")
    assert invoke(["train", "--config", config]) == 0
    return Prior(config, root / "results", "safe_run")


@pytest.fixture()
def results(prior: Prior, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the prior results folder for this test to tamper with."""
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "results"
    shutil.copytree(prior.source, target)
    return target


def run_cli(argv: list[Any], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    capsys.readouterr()
    code = invoke(argv)
    out, err = capsys.readouterr()
    return code, out + err


def assert_refused(code: int, text: str, marker: Path, *needles: str) -> None:
    assert not marker.exists(), "the pickle's code ran"
    assert code == 2, text
    assert "Traceback" not in text, text
    assert "Fix:" in text, text
    for needle in needles:
        assert needle in text, f"{needle!r} not in:\n{text}"


def test_payload_is_live(tmp_path: Path) -> None:
    """Control: the planted file really runs code when unpickled without weights_only."""
    marker = tmp_path / "control_marker"
    path = tmp_path / "evil.pt"
    torch.save({"x": Payload(marker)}, path)
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("rehash", [False, True], ids=["hash-mismatch", "hash-forged"])
def test_resume_refuses_pickled_state(
    prior: Prior, results: Path, tmp_path: Path, rehash: bool, capsys: pytest.CaptureFixture
) -> None:
    marker = tmp_path / "PWNED_state"
    run = results / prior.run_name
    plant(run / "checkpoints" / "epoch_0" / STATE_FILE, marker, rehash)
    metrics = (run / "metrics.csv").read_bytes()
    code, text = run_cli(
        ["train", "--config", prior.config, "--set", f"save_path={results}", "--set", "epochs=2", "--resume"], capsys
    )
    assert_refused(code, text, marker, STATE_FILE, "epoch_0")
    assert (run / "metrics.csv").read_bytes() == metrics
    assert not (run / "checkpoints" / "epoch_1").exists()


def test_fork_refuses_pickled_state(prior: Prior, results: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    marker = tmp_path / "PWNED_fork"
    run = results / prior.run_name
    plant(run / "checkpoints" / "epoch_0" / STATE_FILE, marker)
    code, text = run_cli(
        [
            "train",
            "--config",
            prior.config,
            "--set",
            f"save_path={results}",
            "--set",
            "epochs=3",
            "--set",
            "run_name=fork",
            "--set",
            f"init_from={run}",
            "--set",
            "init_epoch=0",
        ],
        capsys,
    )
    assert_refused(code, text, marker, STATE_FILE)
    assert not (results / "fork").exists()


@pytest.mark.parametrize("rehash", [False, True], ids=["hash-mismatch", "hash-forged"])
def test_resume_refuses_adapter_that_is_not_safetensors(
    prior: Prior, results: Path, tmp_path: Path, rehash: bool, capsys: pytest.CaptureFixture
) -> None:
    marker = tmp_path / "PWNED_adapter"
    run = results / prior.run_name
    plant(run / "checkpoints" / "epoch_0" / ADAPTER_FILE, marker, rehash)
    code, text = run_cli(
        ["train", "--config", prior.config, "--set", f"save_path={results}", "--set", "epochs=2", "--resume"], capsys
    )
    assert_refused(code, text, marker, ADAPTER_FILE)


def infer_config(tmp_path: Path, demo_dir: Path, weights: Path, out: Path) -> Path:
    config = {
        "model_weights_path": str(weights),
        "evaluation_type": "behavioral",
        "annotations_file": str(demo_dir / "eval48" / "eval48.csv"),
        "img_dir": str(demo_dir / "eval48" / "images"),
        "reference_rdm_paths": str(demo_dir / "eval48" / "RDM48_triplet.mat"),
        "device": "cpu",
        "inference_save_dir": str(out),
    }
    path = tmp_path / "infer.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin"])
def test_infer_refuses_pickled_weights_file(
    demo_dir: Path, tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture
) -> None:
    marker = tmp_path / "PWNED_weights"
    weights = tmp_path / f"model{suffix}"
    torch.save({"state_dict": Payload(marker)}, weights)
    out = tmp_path / "inference"
    code, text = run_cli(["infer", "--config", infer_config(tmp_path, demo_dir, weights, out)], capsys)
    assert_refused(code, text, marker, weights.name, "pickled")
    assert not out.exists()


def test_infer_refuses_adapter_that_is_not_safetensors(
    prior: Prior, results: Path, demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    marker = tmp_path / "PWNED_infer_adapter"
    run = results / prior.run_name
    plant(run / "checkpoints" / "epoch_0" / ADAPTER_FILE, marker)
    out = tmp_path / "inference"
    config = infer_config(tmp_path, demo_dir, run, out)
    code, text = run_cli(["infer", "--config", config], capsys)
    assert_refused(code, text, marker, ADAPTER_FILE)
    assert not out.exists()


def test_analyze_refuses_adapter_that_is_not_safetensors(
    prior: Prior, results: Path, demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    marker = tmp_path / "PWNED_analyze"
    run = results / prior.run_name
    plant(run / "checkpoints" / "epoch_0" / ADAPTER_FILE, marker)
    code, text = run_cli(["analyze", run, "--evalsets", demo_dir / "evalsets.yaml", "--datasets", "things"], capsys)
    # damage is contained (issue 20): the file is refused and listed in report.md; the other checkpoints are analysed
    assert not marker.exists(), "the pickle's code ran"
    assert code == 0 and "Traceback" not in text, text
    report = (run / "analysis" / "report.md").read_text()
    assert (
        f"damaged, left out: {run / 'checkpoints' / 'epoch_0'}/{ADAPTER_FILE}: not a readable safetensors file"
        in report
    )
    assert "pickled weights are never loaded" in report


def test_analyze_never_reads_state_pt(
    prior: Prior, results: Path, demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The analysis reads meta.json and safetensors only: a booby-trapped state.pt is never opened."""
    marker = tmp_path / "PWNED_analyze_state"
    run = results / prior.run_name
    for epoch_dir in (run / "checkpoints").iterdir():
        plant(epoch_dir / STATE_FILE, marker)
    code, text = run_cli(["analyze", run, "--evalsets", demo_dir / "evalsets.yaml", "--datasets", "things"], capsys)
    assert code == 0, text
    assert not marker.exists()
    assert (run / "analysis" / "results.parquet").is_file()


# ---- source scans ------------------------------------------------------------------------
def package_sources() -> list[Path]:
    files = [p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))]
    assert len(files) > 10, files
    return files


def dotted(node: ast.AST) -> str:
    """``a.b.c`` for a Name/Attribute chain, else ''."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def calls(path: Path) -> list[tuple[str, ast.Call]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [(dotted(n.func), n) for n in ast.walk(tree) if isinstance(n, ast.Call)]


def keyword(call: ast.Call, name: str) -> Any:
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else kw.value
    return None


def test_every_torch_load_is_weights_only() -> None:
    found, bad = [], []
    for path in package_sources():
        for name, call in calls(path):
            if name == "torch.load":
                found.append(f"{path.relative_to(REPO)}:{call.lineno}")
                if keyword(call, "weights_only") is not True:
                    bad.append(found[-1])
        text = path.read_text()
        assert "from torch import load" not in text, path
    assert found, "expected the resume state to be loaded with torch.load"
    assert not bad, f"torch.load without weights_only=True: {bad}"


def test_no_other_unpickling() -> None:
    bad = []
    for path in package_sources():
        for name, call in calls(path):
            where = f"{path.relative_to(REPO)}:{call.lineno} {name}"
            if name.split(".")[-1] in ("load", "loads", "Unpickler") and name.split(".")[0] in (
                "pickle",
                "cPickle",
                "dill",
                "cloudpickle",
                "joblib",
                "_pickle",
            ):
                bad.append(where)
            if name in ("np.load", "numpy.load") and keyword(call, "allow_pickle") not in (None, False):
                bad.append(where)
            if name.endswith("read_pickle"):
                bad.append(where)
    assert not bad, f"unpickling of data files: {bad}"


def test_yaml_is_safe_loaded_only() -> None:
    safe, bad = [], []
    for path in package_sources():
        for name, call in calls(path):
            if name.startswith("yaml."):
                where = f"{path.relative_to(REPO)}:{call.lineno} {name}"
                if name in (
                    "yaml.load",
                    "yaml.load_all",
                    "yaml.unsafe_load",
                    "yaml.unsafe_load_all",
                    "yaml.full_load",
                    "yaml.full_load_all",
                ):
                    bad.append(where)
                elif name == "yaml.safe_load":
                    safe.append(where)
        text = path.read_text()
        for token in ("yaml.load(", "yaml.unsafe_load", "UnsafeLoader", "yaml.Loader", "FullLoader"):
            if token in text:
                bad.append(f"{path.relative_to(REPO)}: {token}")
    assert safe, "expected configs to be read with yaml.safe_load"
    assert not bad, f"unsafe YAML loading: {bad}"
