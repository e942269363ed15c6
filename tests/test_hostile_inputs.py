"""Hostile inputs through the CLI: bad published files, YAML alias bombs, inflating RDM files.

Every case is generated here; each is an exit-2 message naming the file (and line or key) with a
`Fix:`, no traceback, in a few seconds and a bounded amount of memory.
"""

from __future__ import annotations

import struct
import tracemalloc
import zlib
from pathlib import Path

import pytest
import yaml
from conftest import write_small_run_config

from hba_sweep import cli

GOOD_RES = [
    "epoch,train_loss,test_loss,rsa_behavioral_corr,rsa_behavioral_p",
    "0,0.5,0.6,0.1,0.5",
    "1,0.4,0.5,0.2,0.4",
    "2,0.3,0.4,0.3,0.3",
]
PUBLISHED = {
    "training_mode": "finetune",
    "clip_hba_backbone": "hba-tiny",
    "pretrained": "none",
    "vision_layers": 2,
    "transformer_layers": 1,
    "rank": 16,
    "random_seed": 1,
    "lr": 0.001,
    "max_duration": 3,
    "perturb_type": "none",
}


def invoke(argv: list) -> int:
    return int(cli.main([str(a) for a in argv]))


@pytest.fixture(autouse=True)
def commands_loaded():
    """The commands' modules (torch, the model) are imported before a case is timed."""
    import analysis.analyze  # noqa: F401
    import hba_sweep.training  # noqa: F401


def published_folder(root: Path, res_lines: list[str], config: dict) -> Path:
    """A published run folder: dora_params/epoch0_dora_params.pth, training_res.csv, training_config.yaml."""
    (root / "run1" / "dora_params").mkdir(parents=True)
    (root / "run1" / "dora_params" / "epoch0_dora_params.pth").write_bytes(b"not read before the config")
    (root / "run1" / "training_res.csv").write_text("\n".join(res_lines) + "\n")
    (root / "run1" / "training_config.yaml").write_text(yaml.safe_dump(config))
    return root / "run1"


def analyze_published(demo_dir: Path, root: Path, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = invoke(
        [
            "analyze",
            root,
            "--evalsets",
            demo_dir / "evalsets.yaml",
            "--datasets",
            "things",
            "--out",
            root.parent / "out",
        ]
    )
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "line,words",
    [
        ("1,0.3,0.4,0.3,0.3", "epoch 1 again (first on line 3)"),
        ("2.5,0.3,0.4,0.3,0.3", "epoch='2.5' is not a whole number"),
        ("-1,0.3,0.4,0.3,0.3", "epoch='-1' is not a whole number"),
        (",0.3,0.4,0.3,0.3", "epoch='' is not a whole number"),
    ],
)
def test_bad_epoch_in_published_training_res(demo_dir, tmp_path, capsys, line, words):
    run = published_folder(tmp_path / "pub", GOOD_RES[:3] + [line], PUBLISHED)
    code, err = analyze_published(demo_dir, tmp_path / "pub", capsys)
    assert code == 2, err
    assert f"{run / 'training_res.csv'}: line 4: {words}" in err and "Fix:" in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    "key,value,words",
    [
        ("max_duration", -3, "epochs=-3"),
        ("random_seed", 1.5, "random_seed=1.5 must be an integer"),
        ("rank", "lots", "rank='lots' must be an integer"),
    ],
)
def test_bad_value_in_published_training_config(demo_dir, tmp_path, capsys, key, value, words):
    run = published_folder(tmp_path / "pub", GOOD_RES, {**PUBLISHED, key: value})
    code, err = analyze_published(demo_dir, tmp_path / "pub", capsys)
    assert code == 2, err
    assert str(run / "training_config.yaml") in err and words in err and "Fix:" in err and "Traceback" not in err, err


def test_published_rank_as_a_string_is_coerced_like_our_configs(tmp_path):
    """``rank: "16"`` is what our own configs accept (the schema coerces it); the published reader agrees."""
    from analysis.published_runs import run_config
    from hba_sweep.config import from_dict

    run = published_folder(tmp_path / "pub", GOOD_RES, {**PUBLISHED, "rank": "16"})
    assert run_config(run)["rank"] == 16 == from_dict({"rank": "16"}, check_files=False).rank


# ---- bounded parsing ------------------------------------------------------------------------
def alias_bomb(keys: list[str]) -> str:
    """ "Billion laughs": each key's value repeats the previous anchor 9 times (9**len(keys) leaves)."""
    lines = [f'{keys[0]}: &k0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i, key in enumerate(keys[1:], start=1):
        lines.append(f"{key}: &k{i} [" + ",".join([f"*k{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


KNOWN_KEYS = [
    "wandb_entity",
    "wandb_project",
    "backbone",
    "perturb_type",
    "run_name",
    "criterion",
    "opt",
    "lr_scheduler",
    "precision",
]


@pytest.fixture
def constructed(monkeypatch):
    """Counts documents built from YAML nodes: a refused bomb is never built (bounded time and memory)."""
    calls = []
    real = yaml.SafeLoader.construct_document

    def spy(self, node):
        calls.append(node)
        return real(self, node)

    monkeypatch.setattr(yaml.SafeLoader, "construct_document", spy)
    return calls


def test_alias_bomb_in_a_training_config_is_refused_fast(tmp_path, capsys, constructed):
    config = tmp_path / "bomb.yaml"
    config.write_text(alias_bomb(KNOWN_KEYS))
    code = invoke(["train", "--config", config])
    err = capsys.readouterr().err
    assert code == 2 and not constructed, err
    assert f"{config}: the YAML expands to more than" in err and "Fix:" in err and "Traceback" not in err, err


def test_alias_bomb_in_an_evaluation_set_file_is_refused_fast(demo_dir, tmp_path, capsys):
    published_folder(tmp_path / "pub", GOOD_RES, PUBLISHED)
    evalsets = tmp_path / "evalsets.yaml"
    evalsets.write_text(alias_bomb(["a", "b", "c", "d", "e", "f", "g", "h", "things"]))
    code = invoke(["analyze", tmp_path / "pub", "--evalsets", evalsets, "--out", tmp_path / "out"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"{evalsets}: the YAML expands to more than" in err and "Traceback" not in err, err


def test_anchors_within_the_bound_still_load(tmp_path):
    from hba_sweep.foundation.yaml_io import read_yaml

    path = tmp_path / "anchors.yaml"
    path.write_text("base: &b {lr: 0.001, rank: 8}\nother: *b\n")
    assert read_yaml(path) == {"base": {"lr": 0.001, "rank": 8}, "other": {"lr": 0.001, "rank": 8}}


def inflating_mat(path: Path, n: int) -> None:
    """A MATLAB v5 file of about 1.8 MB whose one compressed variable inflates to an n x n double matrix
    (n = 15000: 1.8 GB), built from one compressed block of zeros repeated (no large allocation here)."""
    body = n * n * 8
    sub = (
        struct.pack("<IIII", 6, 8, 6, 0)
        + struct.pack("<IIii", 5, 8, n, n)
        + struct.pack("<II", 1, 3)
        + b"rdm\0\0\0\0\0"
        + struct.pack("<II", 9, body)
    )
    head = struct.pack("<II", 14, len(sub) + body) + sub
    start = zlib.compressobj(9)
    block = zlib.compressobj(9, zlib.DEFLATED, -15)
    packed = block.compress(bytes(1 << 20)) + block.flush(zlib.Z_FULL_FLUSH)
    full, rest = divmod(body, 1 << 20)
    last = zlib.compressobj(9, zlib.DEFLATED, -15)
    check = zlib.adler32(head)
    a, b = check & 0xFFFF, ((check >> 16) + (check & 0xFFFF) * body) % 65521
    data = (
        start.compress(head)
        + start.flush(zlib.Z_FULL_FLUSH)
        + packed * full
        + last.compress(bytes(rest))
        + last.flush()
        + struct.pack(">I", (b << 16) | a)
    )  # adler32 of head + zeros: a stays, b grows by a per byte
    header = b"MATLAB 5.0 MAT-file".ljust(116, b" ") + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"
    path.write_bytes(header + struct.pack("<II", 15, len(data)) + data)


def test_inflating_mat_rdm_is_refused_from_its_header(demo_dir, tmp_path, capsys):
    rdm = tmp_path / "huge_rdm.mat"
    inflating_mat(rdm, 15000)
    assert rdm.stat().st_size < 2_000_000
    config, _, _ = write_small_run_config(demo_dir, tmp_path, "rdm")
    tracemalloc.start()  # Python and numpy allocations from here on (the process's own peak RSS is the suite's)
    try:
        code = invoke(["train", "--config", config, "--set", f"behavioral_rdm_file={rdm}"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"{rdm}: the RDM is 15000x15000" in err and "its data was not loaded" in err and "Traceback" not in err, err
    assert peak < 200_000_000  # bytes: the 1.8 GB matrix never existed


# ---- damage is contained ----------------------------------------------------------------------
def test_damaged_and_deleted_checkpoints_are_listed_and_the_rest_is_analysed(demo_dir, tmp_path, capsys):
    """One epoch's adapter fails its hash, another epoch's checkpoint was deleted: analyze evaluates and saves
    every other checkpoint and report.md names both, with how to restore them."""
    import shutil

    import pandas as pd

    config, _, _ = write_small_run_config(demo_dir, tmp_path, "dmg")
    assert invoke(["train", "--config", config, "--set", "epochs=3"]) == 0
    run = tmp_path / "results" / "dmg"
    damaged = run / "checkpoints" / "epoch_1" / "adapter.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:-8] + b"garbage!")
    shutil.rmtree(run / "checkpoints" / "epoch_2")
    capsys.readouterr()

    code = invoke(["analyze", run, "--evalsets", demo_dir / "evalsets.yaml", "--datasets", "things"])

    err = capsys.readouterr().err
    assert code == 0, err
    cache = pd.read_parquet(run / "analysis" / "evaluations.parquet")
    results = pd.read_parquet(run / "analysis" / "results.parquet")
    assert sorted(results["epoch"].unique().tolist()) == [-1, 0]  # every readable checkpoint evaluated and saved
    assert cache["checkpoint_key"].nunique() == 2
    report = (run / "analysis" / "report.md").read_text()
    assert "Nothing was skipped" not in report
    assert f"damaged, left out: {damaged}: does not match its recorded hash" in report and "--resume" in report
    assert "missing, left out: dmg" in report and "epoch 2" in report


def test_refused_pickle_message_never_reads_as_advice_to_turn_weights_only_off(demo_dir, tmp_path, capsys):
    """A state.pt that torch's weights_only reader refuses (recorded hash updated to match): the message
    says why without torch's 'set weights_only to False' sentence."""
    import hashlib
    import json
    import pickle

    config, _, _ = write_small_run_config(demo_dir, tmp_path, "pkl")
    assert invoke(["train", "--config", config]) == 0
    epoch = tmp_path / "results" / "pkl" / "checkpoints" / "epoch_0"
    (epoch / "state.pt").write_bytes(pickle.dumps({"epoch": 1j}, protocol=4))
    meta = json.loads((epoch / "meta.json").read_text())
    meta["sha256"]["state.pt"] = hashlib.sha256((epoch / "state.pt").read_bytes()).hexdigest()
    (epoch / "meta.json").write_text(json.dumps(meta))
    capsys.readouterr()

    code = invoke(["train", "--config", config, "--set", "epochs=2", "--resume"])

    err = capsys.readouterr().err
    assert code == 2, err
    assert f"{epoch / 'state.pt'}: refused" in err and "refused by torch's weights_only reader" in err, err
    assert "set to `False`" not in err and "Re-running" not in err and "do not load it with weights_only=False" in err
