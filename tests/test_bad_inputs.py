"""Bad input, table-driven (issue 6, part 3): every malformed input goes through the CLI.

Each case builds a bad input from the demo data in ``tmp_path`` (copy, then corrupt), runs
``hba_sweep.cli.main(argv)`` in-process and checks that it

- exits non-zero (2: an HBAError, or an argparse usage error),
- prints a message naming the file or field and a fix ("Fix:"; for argparse, the usage line),
- prints no traceback,
- leaves existing results untouched: a prior run (its directory, ``metrics.csv``, checkpoints)
  and a prior analysis of it (``analysis/``) are byte-identical afterwards, and nothing new is
  written under the results folder (the shared frozen-prefix cache aside).

The same cases, grouped, are the troubleshooting table (docs/troubleshooting.md).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import write_small_run_config

from hba_sweep import cli
from hba_sweep.data.rdm_io import save_rdm_mat

CACHE_DIRS = {"prefix_cache"}  # a shared cache may grow; results may not change
FIX_MARKERS = ("Fix:", "usage:")


# ---- the prior results every case must leave alone -----------------------------------
@dataclass(frozen=True)
class Prior:
    demo: Path  # the session's demo data (never modified)
    save_path: Path  # results folder: the prior run, its analysis, and where bad cases would write
    run_dir: Path  # the prior run (epochs=1): config.yaml, metrics.csv, checkpoints/, analysis/
    base: dict[str, Any]  # the prior run's config (absolute paths); bad train configs start from it
    small_csv: Path  # the first SMALL_ROWS rows of the demo training CSV


def invoke(argv: list[str]) -> int:
    """``python -m hba_sweep ARGV`` in-process; argparse's SystemExit becomes the exit code."""
    try:
        return int(cli.main([str(a) for a in argv]))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


def snapshot(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (cache folders and lock files left out)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and not CACHE_DIRS.intersection(rel.parts) and path.suffix != ".lock":
            out[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def prior(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Prior:
    """One tiny training run (epochs=1, 40 images) and its analysis (THINGS 48), made once."""
    root = tmp_path_factory.mktemp("prior")
    config, base, small_csv = write_small_run_config(demo_dir, root, "prior_run")
    save_path = root / "results"
    assert invoke(["train", "--config", config]) == 0
    run_dir = save_path / "prior_run"
    assert invoke(["analyze", run_dir, "--evalsets", demo_dir / "evalsets.yaml", "--datasets", "things"]) == 0
    assert (run_dir / "metrics.csv").is_file() and (run_dir / "analysis" / "results.parquet").is_file()
    return Prior(demo_dir, save_path, run_dir, base, small_csv)


# ---- builders of bad inputs (each writes into the case's tmp dir) ------------------------
@dataclass(frozen=True)
class Env:
    prior: Prior
    tmp: Path

    @property
    def demo(self) -> Path:
        return self.prior.demo


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def train_yaml(env: Env, name: str = "bad_config.yaml", **changes: Any) -> Path:
    """The prior run's config with ``changes`` (a new run_name: a valid config would start a new run)."""
    values = {**env.prior.base, "run_name": "bad_case_run", **changes}
    return write(env.tmp / name, yaml.safe_dump(values))


def train(env: Env, name: str = "bad_config.yaml", **changes: Any) -> list[Any]:
    return ["train", "--config", train_yaml(env, name, **changes)]


def csv_lines(env: Env) -> list[str]:
    return env.prior.small_csv.read_text().splitlines()


def bad_csv(env: Env, name: str, edit: Callable[[list[str]], list[str]]) -> Path:
    return write(env.tmp / name, "\n".join(edit(csv_lines(env))) + "\n")


def set_cell(lines: list[str], row: int, column: int, value: str) -> list[str]:
    """Replace the cell at data row ``row`` (0-based), CSV column ``column`` (0 = the index column)."""
    cells = lines[row + 1].split(",")
    cells[column] = value
    return lines[: row + 1] + [",".join(cells)] + lines[row + 2 :]


def train_with_csv(env: Env, name: str, edit: Callable[[list[str]], list[str]], **changes: Any) -> list[Any]:
    return train(env, img_annotations_file=str(bad_csv(env, name, edit)), **changes)


def image_dir_with(env: Env, extra: dict[str, bytes]) -> Path:
    """A copy of the images the small CSV names, plus ``extra`` files."""
    folder = env.tmp / "images"
    folder.mkdir()
    for line in csv_lines(env)[1:]:
        name = line.split(",")[1]
        shutil.copy(env.demo / "images" / name, folder / name)
    for name, data in extra.items():
        (folder / name).write_bytes(data)
    return folder


def rdm48(env: Env) -> np.ndarray:
    import scipy.io

    return np.asarray(scipy.io.loadmat(str(env.demo / "eval48" / "RDM48_triplet.mat"))["RDM48_triplet"], float)


def train_with_rdm(env: Env, name: str, rdm: np.ndarray) -> list[Any]:
    path = env.tmp / name
    if path.suffix == ".npy":
        np.save(path, rdm)
    else:
        save_rdm_mat(path, "RDM48_triplet", rdm)
    return train(env, behavioral_rdm_file=str(path))


def evalsets_yaml(env: Env, edit: Callable[[dict[str, Any]], None]) -> Path:
    """The demo evalsets.yaml with absolute paths, changed by ``edit``."""
    specs = yaml.safe_load((env.demo / "evalsets.yaml").read_text())
    for spec in specs.values():
        for key, value in spec.items():
            if key in ("annotations_file", "metadata_csv", "index_csv", "data_csv", "img_dir"):
                spec[key] = str(env.demo / value)
            elif key == "reference_rdms":
                spec[key] = {k: str(env.demo / v) for k, v in value.items()}
    edit(specs)
    return write(env.tmp / "bad_evalsets.yaml", yaml.safe_dump(specs))


def analyze(env: Env, dataset: str, edit: Callable[[dict[str, Any]], None]) -> list[Any]:
    return ["analyze", env.prior.run_dir, "--evalsets", evalsets_yaml(env, edit), "--datasets", dataset]


def drop_column(src: Path, dst: Path, column: str) -> Path:
    import pandas as pd

    frame = pd.read_csv(src, dtype=str, keep_default_na=False)
    frame.drop(columns=[column]).to_csv(dst, index=False)
    return dst


def set_spec(dataset: str, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(specs: dict[str, Any]) -> None:
        specs[dataset][key] = value

    return edit


def fmri_rdm(env: Env, name: str, rdm: np.ndarray) -> list[Any]:
    path = env.tmp / name
    save_rdm_mat(path, "rdm_V1", rdm)
    return analyze(env, "things_fmri", set_spec("things_fmri", "reference_rdms", {"V1": str(path)}))


def nod_missing_category(env: Env) -> list[Any]:
    index = drop_column(env.demo / "nod" / "index.csv", env.tmp / "nod_no_category.csv", "category")
    return analyze(env, "nod", set_spec("nod", "index_csv", str(index)))


def nights_missing_vote(env: Env) -> list[Any]:
    data = drop_column(env.demo / "nights" / "data.csv", env.tmp / "nights_no_vote.csv", "right_vote")
    return analyze(env, "nights", set_spec("nights", "data_csv", str(data)))


def infer_nod_missing_image_column(env: Env) -> list[Any]:
    index = drop_column(env.demo / "nod" / "index.csv", env.tmp / "nod_no_image.csv", "image")
    config = {
        "model_weights_path": str(env.prior.run_dir),
        "epoch": 0,
        "evaluation_type": "neural",
        "dataset": "nod",
        "annotations_file": str(index),
        "img_dir": str(env.demo / "nod" / "images"),
        "reference_rdm_paths": {"V1": str(env.demo / "nod" / "rdm_V1.mat")},
        "device": "cpu",
        "inference_save_dir": str(env.prior.save_path / "inference"),
    }
    return ["infer", "--config", write(env.tmp / "infer.yaml", yaml.safe_dump(config))]


def space_file(env: Env, body: str, name: str = "bad_space.py", base: Path | None = None) -> Path:
    base = base or train_yaml(env, "space_base.yaml")
    return write(env.tmp / name, f"from ray import tune\n\nBASE_CONFIG = {str(base)!r}\n{body}\n")


def run_space(env: Env, body: str, *flags: str, name: str = "bad_space.py", base: Path | None = None) -> list[Any]:
    return ["run", space_file(env, body, name, base), *flags, "--storage", env.prior.save_path / "ray_results"]


# ---- the table ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Env], list[Any]]  # writes the bad input, returns the argv
    expect: tuple[str, ...]  # the message must name these (file, field, value)


CASES = [
    # training configs (train --config)
    Case(
        "config-yaml-syntax",
        lambda e: ["train", "--config", write(e.tmp / "syntax.yaml", "epochs: [1, 2\nrank: 4\n")],
        ("syntax.yaml", "not valid YAML"),
    ),
    Case("config-unknown-key", lambda e: train(e, epohcs=3), ("bad_config.yaml", "unknown key 'epohcs'", "'epochs'")),
    Case("config-wrong-type", lambda e: train(e, batch_size="lots"), ("bad_config.yaml", "batch_size", "integer")),
    Case("config-impossible-value", lambda e: train(e, train_portion=1.5), ("bad_config.yaml", "train_portion")),
    Case(
        "config-window-past-end",
        lambda e: train(e, perturb_type="label_shuffle", perturb_epoch=3, perturb_length=2),
        ("perturb_epoch=3", "perturb_length=2"),
    ),
    Case(
        "config-unknown-perturbation", lambda e: train(e, perturb_type="label_shufle"), ("perturb_type='label_shufle'",)
    ),
    Case(
        "config-file-missing",
        lambda e: ["train", "--config", e.tmp / "nowhere.yaml"],
        ("nowhere.yaml", "no such config"),
    ),
    Case(
        "config-data-file-missing",
        lambda e: train(e, img_annotations_file=str(e.tmp / "gone.csv")),
        ("img_annotations_file", "gone.csv", "no such file"),
    ),
    Case(
        "config-set-syntax",
        lambda e: ["train", "--config", train_yaml(e), "--set", "epochs"],
        ("--set 'epochs'", "key=value"),
    ),
    Case(
        "config-set-bad-value",
        lambda e: ["train", "--config", train_yaml(e), "--set", "lr=-1"],
        ("lr=-1.0", "positive"),
    ),
    # THINGS CSVs (training annotations)
    Case(
        "csv-wrong-column-count",
        lambda e: train_with_csv(e, "short_columns.csv", lambda ls: [",".join(line.split(",")[:-1]) for line in ls]),
        ("short_columns.csv", "65 target columns", "expected 66"),
    ),
    Case(
        "csv-nan-target",
        lambda e: train_with_csv(e, "nan_target.csv", lambda ls: set_cell(ls, 3, 5, "nan")),
        ("nan_target.csv", "row 4", "column '3'", "NaN"),
    ),
    Case(
        "csv-inf-target",
        lambda e: train_with_csv(e, "inf_target.csv", lambda ls: set_cell(ls, 0, 2, "inf")),
        ("inf_target.csv", "row 1", "column '0'", "infinite"),
    ),
    Case(
        "csv-duplicate-image",
        lambda e: train_with_csv(e, "dup_names.csv", lambda ls: set_cell(ls, 5, 1, ls[1].split(",")[1])),
        ("dup_names.csv", "image_name", "duplicates"),
    ),
    Case(
        "csv-missing-image",
        lambda e: train_with_csv(e, "ghost_image.csv", lambda ls: set_cell(ls, 2, 1, "ghost.png")),
        ("ghost_image.csv", "ghost.png", "not found"),
    ),
    Case(
        "csv-non-image-file",
        lambda e: train_with_csv(
            e,
            "text_image.csv",
            lambda ls: set_cell(ls, 2, 1, "notes.png"),
            img_dir=str(image_dir_with(e, {"notes.png": b"these are my notes, not a picture\n"})),
        ),
        ("notes.png", "not a readable image"),
    ),
    Case(
        "csv-not-a-csv",
        lambda e: train(e, img_annotations_file=str(write(e.tmp / "empty.csv", ""))),
        ("empty.csv", "empty"),
    ),
    # RDM files
    Case(
        "rdm-not-square",
        lambda e: train_with_rdm(e, "rdm_48x47.npy", rdm48(e)[:, :47]),
        ("rdm_48x47.npy", "not square"),
    ),
    Case(
        "rdm-nan",
        lambda e: train_with_rdm(e, "rdm_nan.mat", np.where(np.eye(48, k=3, dtype=bool), np.nan, rdm48(e))),
        ("rdm_nan.mat", "non-finite"),
    ),
    Case(
        "rdm-wrong-size-train",
        lambda e: train_with_rdm(e, "rdm_40.mat", rdm48(e)[:40, :40]),
        ("rdm_40.mat", "40x40", "48 items"),
    ),
    Case(
        "rdm-constant", lambda e: train_with_rdm(e, "rdm_zeros.mat", np.zeros((48, 48))), ("rdm_zeros.mat", "constant")
    ),
    Case(
        "rdm-asymmetric",
        lambda e: fmri_rdm(e, "rdm_asym.mat", np.triu(np.ones((12, 12)), 1)),
        ("rdm_asym.mat", "not symmetric"),
    ),
    Case(
        "rdm-wrong-size-analyze",
        lambda e: fmri_rdm(e, "rdm_10.mat", np.ones((10, 10)) - np.eye(10)),
        ("rdm_10.mat", "10x10", "12 items"),
    ),
    Case(
        "rdm-not-square-analyze",
        lambda e: fmri_rdm(e, "rdm_12x11.mat", np.ones((12, 11))),
        ("rdm_12x11.mat", "not square"),
    ),
    # NIGHTS / NOD / evaluation-set files (analyze --evalsets, infer --config)
    Case("nod-missing-column", nod_missing_category, ("nod_no_category.csv", "missing column", "category")),
    Case("nights-missing-column", nights_missing_vote, ("nights_no_vote.csv", "missing column", "right_vote")),
    Case("infer-nod-missing-column", infer_nod_missing_image_column, ("nod_no_image.csv", "missing column", "'image'")),
    Case(
        "evalsets-missing-key",
        lambda e: analyze(e, "nod", lambda s: s["nod"].pop("index_csv")),
        ("bad_evalsets.yaml", "nod is missing", "index_csv"),
    ),
    Case(
        "evalsets-unknown-dataset",
        lambda e: analyze(e, "things", lambda s: s.update(imagenet={"img_dir": "x"})),
        ("bad_evalsets.yaml", "unknown dataset 'imagenet'"),
    ),
    # search-space files (run FILE [--dry-run])
    Case(
        "space-missing-param-space", lambda e: run_space(e, "", "--dry-run"), ("bad_space.py", "PARAM_SPACE is missing")
    ),
    Case(
        "space-missing-base-config",
        lambda e: ["run", write(e.tmp / "no_base.py", "PARAM_SPACE = {'epochs': 1}\n"), "--dry-run"],
        ("no_base.py", "BASE_CONFIG is missing"),
    ),
    Case(
        "space-misspelt-name",
        lambda e: run_space(e, "PARAM_SPACES = {'epochs': 1}", "--dry-run"),
        ("bad_space.py", "PARAM_SPACES", "did you mean PARAM_SPACE"),
    ),
    Case(
        "space-bad-trial-value",
        lambda e: run_space(
            e, "PARAM_SPACE = {'perturb_type': tune.grid_search(['none', 'label_shufle'])}", "--dry-run"
        ),
        ("bad_space.py", "trial 1", "perturb_type='label_shufle'"),
    ),
    Case(
        "space-syntax-error",
        lambda e: run_space(e, "PARAM_SPACE = {'epochs': 1", "--dry-run"),
        ("bad_space.py", "syntax error"),
    ),
    Case(
        "space-missing-data-no-dry-run",
        lambda e: run_space(
            e, "PARAM_SPACE = {'epochs': 1}", base=train_yaml(e, "space_base.yaml", img_dir=str(e.tmp / "no_images"))
        ),
        ("bad_space.py", "nothing was started", "no_images"),
    ),
    # CLI arguments
    Case("cli-missing-required-argument", lambda e: ["train"], ("--config",)),
    Case("cli-unknown-command", lambda e: ["trian", "--config", "x.yaml"], ("invalid choice", "'trian'")),
    Case(
        "cli-bad-max-concurrent",
        lambda e: ["run", space_file(e, "PARAM_SPACE = {}"), "--max-concurrent", "0"],
        ("--max-concurrent", "must be 1 or more"),
    ),
    Case(
        "cli-status-missing-dir",
        lambda e: ["status", e.tmp / "no_such_experiment"],
        ("no_such_experiment", "no such experiment directory"),
    ),
    Case("cli-analyze-missing-dir", lambda e: ["analyze", e.tmp / "no_such_experiment"], ("no_such_experiment",)),
    Case(
        "cli-analyze-unknown-dataset",
        lambda e: ["analyze", e.prior.run_dir, "--evalsets", e.demo / "evalsets.yaml", "--datasets", "imagenet"],
        ("--datasets", "'imagenet'"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(
    case: Case, prior: Prior, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a relative default (ray_results, runs) must not land in the repository
    env = Env(prior, tmp_path / "case")
    env.tmp.mkdir()
    argv = case.build(env)
    before = snapshot(prior.save_path)
    capsys.readouterr()

    code = invoke(argv)

    out, err = capsys.readouterr()
    text = out + err
    assert code == 2, f"exit code {code} for {argv}:\n{text}"
    assert "Traceback" not in text, text
    for needle in case.expect:
        assert needle in err, f"{needle!r} not in the message:\n{err}"
    assert any(m in err for m in FIX_MARKERS), f"no fix in the message:\n{err}"
    after = snapshot(prior.save_path)
    assert after == before, (
        f"results changed: new {sorted(set(after) - set(before))}, "
        f"changed {sorted(k for k in before if after.get(k) != before[k])}"
    )


def test_table_covers_every_group() -> None:
    groups = {c.id.split("-")[0] for c in CASES}
    assert {"config", "csv", "rdm", "nod", "nights", "infer", "evalsets", "space", "cli"} <= groups
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)
