"""Sweep-wide analysis on a small study trained directly (a baseline and a fork), no Ray."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from analysis import gather
from analysis.analyze import analyze
from analysis.evaluate import Options
from hba_sweep.artifacts import checkpoint as ckpt
from hba_sweep.cli import main
from hba_sweep.model import ModelSpec, create_model
from hba_sweep.training import prefix_cache
from hba_sweep.training.predict import Predictor

DOCUMENTED = [
    "trial_id",
    "epoch",
    "inherited",
    "dataset",
    "reference",
    "metric",
    "value",
    "p_value",
    "ci_low",
    "ci_high",
    "perturb_type",
    "perturb_epoch",
    "perturb_length",
    "perturb_seed",
    "random_seed",
]
# demo evalsets: things (1 reference), things_fmri (2 ROIs), nod (2 ROIs), nights (1), cka (2 metrics)
ROWS_PER_CHECKPOINT = 1 + 2 + 2 + 1 + 2
FIGURES = [
    "baseline_curves.png",
    "change_label_shuffle.png",
    "ba_vs_loss.png",
    "na_vs_loss_things_fmri.png",
    "na_vs_loss_nod.png",
    "single_epoch_effects.png",
    "heatmap_max_alignment.png",
    "heatmap_min_val_loss.png",
]


@pytest.fixture(scope="module")
def study(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A baseline (epochs -1..1) and a label_shuffle fork from its epoch 0 (perturbed epoch 1)."""
    from hba_sweep.config import load_config
    from hba_sweep.training import run_training_experiment

    root = tmp_path_factory.mktemp("study")
    cfg = load_config(demo_dir / "train.yaml", {"save_path": str(root / "runs"), "epochs": 2, "progress": False})
    base = run_training_experiment(cfg)["run_dir"]
    fork = run_training_experiment(
        cfg.replace(init_from=base, init_epoch=0, perturb_type="label_shuffle", perturb_epoch=1, perturb_length=1)
    )["run_dir"]
    return {"root": root / "runs", "baseline": Path(base), "fork": Path(fork), "evalsets": demo_dir / "evalsets.yaml"}


@pytest.fixture()
def work(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts inference work as it happens: checkpoint predictions (``Predictor.predict`` calls) and
    images whose frozen prefix is computed (``prefix_cache.compute_prefix``)."""
    counts = {"prefix_images": 0, "checkpoint_predictions": 0}
    predict, compute = Predictor.predict, prefix_cache.compute_prefix

    def counted_predict(self, paths):
        out = predict(self, paths)
        counts["checkpoint_predictions"] += 1
        return out

    def counted_compute(prefix_fn, batches, n, *args, **kwargs):
        counts["prefix_images"] += n
        return compute(prefix_fn, batches, n, *args, **kwargs)

    monkeypatch.setattr(Predictor, "predict", counted_predict)
    monkeypatch.setattr(prefix_cache, "compute_prefix", counted_compute)
    return counts


class Counter:
    """Counts adapted-part forward calls (the per-checkpoint inference work)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from hba_sweep.model import CLIPHBA

        self.calls = 0
        original = CLIPHBA.forward_from_prefix

        def counted(model, *args, **kwargs):
            self.calls += 1
            return original(model, *args, **kwargs)

        monkeypatch.setattr(CLIPHBA, "forward_from_prefix", counted)


def test_analyze_study_rows_figures_and_rerun(study: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "analysis"
    counter = Counter(monkeypatch)
    first = analyze(str(study["root"]), Options(evalsets_file=str(study["evalsets"])), str(out), log=lambda m: None)
    results = pd.read_parquet(out / "results.parquet")
    assert set(DOCUMENTED) <= set(results.columns)
    key = ["trial_id", "epoch", "dataset", "reference", "metric"]
    assert not results.duplicated(key).any()
    base, fork = study["baseline"].name, study["fork"].name
    expected_entries = {(base, e) for e in (-1, 0, 1)} | {(fork, e) for e in (-1, 0, 1)}
    assert set(zip(results["trial_id"], results["epoch"], strict=False)) == expected_entries
    assert len(results) == len(expected_entries) * ROWS_PER_CHECKPOINT
    assert set(results["dataset"]) == {"things", "things_fmri", "nod", "nights", "cka"}
    # the fork's epochs -1 and 0 are the baseline's checkpoints, flagged inherited, same numbers
    inherited = results[results["inherited"]]
    assert set(zip(inherited["trial_id"], inherited["epoch"], strict=False)) == {(fork, -1), (fork, 0)}
    merged = inherited.merge(results[results["trial_id"] == base], on=["epoch", "dataset", "reference", "metric"])
    assert np.allclose(merged["value_x"], merged["value_y"])
    # the behavioural RSA equals the one training logged
    logged = pd.read_csv(study["baseline"] / "metrics.csv").set_index("epoch")["behavioral_rsa_rho"]
    beh = results[(results["trial_id"] == base) & (results["dataset"] == "things")].set_index("epoch")["value"]
    assert np.allclose(beh.sort_index(), logged.sort_index(), atol=1e-6)
    assert first.computed == 4  # 3 baseline epochs + the fork's epoch 1; inherited ones are not recomputed
    training = pd.read_parquet(out / "training_metrics.parquet")
    assert len(training) == 6 and training["inherited"].sum() == 2
    for name in FIGURES:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert all(name in report for name in FIGURES) and "label_shuffle" in report

    calls = counter.calls
    assert calls > 0
    second = analyze(str(study["root"]), Options(evalsets_file=str(study["evalsets"])), str(out), log=lambda m: None)
    assert second.computed == 0 and counter.calls == calls  # nothing new computed
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), results)


def test_rerun_recomputes_only_what_changed(study: dict, tmp_path: Path, work: dict[str, int]) -> None:
    """Evaluations are keyed by what decides their numbers: RSA settings only touch RSA sets, and a
    reference RDM rewritten at the same path is evaluated again (not served stale from the cache)."""
    import os

    import yaml

    from hba_sweep.data.evalsets import read_evalsets_yaml
    from hba_sweep.data.rdm_io import load_rdm, save_rdm_mat
    from hba_sweep.training.scoring import ScoreSettings

    specs = read_evalsets_yaml(study["evalsets"])
    rdm_file = tmp_path / "RDM48_triplet.mat"
    shutil.copy(specs["things"]["reference_rdms"]["behavior"], rdm_file)
    specs["things"]["reference_rdms"] = {"behavior": str(rdm_file)}
    evalsets = tmp_path / "evalsets.yaml"
    evalsets.write_text(yaml.safe_dump({k: specs[k] for k in ("things", "nights")}))
    out = tmp_path / "a"

    def run(**score) -> pd.DataFrame:
        opts = Options(datasets=["things", "cka", "nights"], evalsets_file=str(evalsets), score=ScoreSettings(**score))
        analyze(str(study["root"]), opts, str(out), log=lambda m: None)
        return pd.read_parquet(out / "results.parquet")

    def predictions_during(**score) -> tuple[int, pd.DataFrame]:
        before = work["checkpoint_predictions"]
        table = run(**score)
        return work["checkpoint_predictions"] - before, table

    assert predictions_during()[0] == 4 * 3  # 4 distinct checkpoints x (things, cka, nights)
    count, before = predictions_during(n_boot=5)
    assert count == 4  # bootstrap settings: only the RSA set again
    rdm = load_rdm(rdm_file)
    save_rdm_mat(rdm_file, "RDM48_triplet", rdm[::-1, ::-1])  # the stimuli in reverse order: other numbers
    os.utime(rdm_file, ns=(0, os.stat(rdm_file).st_mtime_ns + 10**9))  # a new mtime even on coarse clocks
    count, after = predictions_during(n_boot=5)
    assert count == 4
    rsa_rows = after["metric"] == "rsa_spearman"
    assert not np.allclose(before.loc[rsa_rows, "value"], after.loc[rsa_rows, "value"])
    pd.testing.assert_frame_equal(before[~rsa_rows], after[~rsa_rows])  # CKA and 2AFC rows kept
    assert predictions_during(n_boot=5)[0] == 0


def test_analyze_cli_subset_and_csv(study: dict, tmp_path: Path) -> None:
    out = tmp_path / "a"
    rc = main(
        [
            "analyze",
            str(study["root"]),
            "--datasets",
            "things,nights",
            "--evalsets",
            str(study["evalsets"]),
            "--out",
            str(out),
            "--csv",
            "--local",
        ]
    )
    assert rc == 0
    table = pd.read_csv(out / "results.csv")
    assert set(table["dataset"]) == {"things", "nights"} and (out / "training_metrics.csv").is_file()


def test_bad_inputs_exit_2_and_leave_results(study: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "a"
    assert (
        main(
            [
                "analyze",
                str(study["root"]),
                "--datasets",
                "things",
                "--evalsets",
                str(study["evalsets"]),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("things: [1, 2\n")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("mnist: {img_dir: x}\n")
    cases = [
        (["analyze", str(tmp_path / "nope")], "not found"),
        (
            ["analyze", str(study["root"]), "--datasets", "things,imagenet", "--evalsets", str(study["evalsets"])],
            "imagenet",
        ),
        (["analyze", str(study["root"]), "--evalsets", str(bad_yaml)], "bad.yaml"),
        (["analyze", str(study["root"]), "--evalsets", str(unknown)], "mnist"),
    ]
    capsys.readouterr()
    for argv, needle in cases:
        assert main([*argv, "--out", str(out)]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error:") and needle in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_gather_reads_tune_trial_layout(study: dict, tmp_path: Path) -> None:
    """Tune trial dirs (checkpoint_00000N/ + params.json, run_name 'run' in meta) gather like run dirs."""
    exp = tmp_path / "exp" / "baselines" / "train_hba_00000"
    for i, epoch in enumerate(ckpt.list_epochs(study["baseline"])):
        shutil.copytree(ckpt.epoch_dir(study["baseline"], epoch), exp / f"checkpoint_{i:06d}")
        meta = json.loads((exp / f"checkpoint_{i:06d}" / "meta.json").read_text())
        (exp / f"checkpoint_{i:06d}" / "meta.json").write_text(json.dumps({**meta, "run_name": "run"}))
    (exp / "params.json").write_text(json.dumps({"run_name": "seed1_baseline"}))
    (exp / "params.pkl").write_bytes(b"not to be read")
    (exp / "result.json").write_text(json.dumps({"trial_id": "5f2c1_00000", "epoch": -1}) + "\n")
    fs, root = gather.open_experiment(str(tmp_path / "exp"))
    found = gather.gather(fs, root)
    assert list(found.trials) == ["5f2c1_00000"]  # Tune's trial id; the run name is the label
    assert found.trials["5f2c1_00000"].label == "seed1_baseline"
    assert [(e.epoch, e.inherited) for e in found.entries] == [(-1, False), (0, False), (1, False)]


def test_batched_inference_equals_full_forward(study: dict, demo_dir: Path, work: dict[str, int]) -> None:
    """Prefix once per image set + adapted part per checkpoint == model.forward on images, per checkpoint."""
    from hba_sweep.data.images import ImageStore
    from hba_sweep.data.things import read_things_csv

    names, _ = read_things_csv(demo_dir / "eval48" / "eval48.csv")
    paths = [demo_dir / "eval48" / "images" / n for n in names]
    dirs = [ckpt.epoch_dir(study["baseline"], e) for e in ckpt.list_epochs(study["baseline"])]
    dirs += [ckpt.epoch_dir(study["fork"], 1)]
    config = ckpt.read_meta(dirs[0])["config"]
    spec = ModelSpec.from_mapping(config)
    predictor = Predictor(spec, "cpu", None, batch_size=16)
    before = work["prefix_images"]
    oracle = create_model(spec).eval()
    images = ImageStore(paths, oracle.image_size).all()
    for d in dirs:
        adapters = ckpt.load_adapters(d)
        predictor.load(adapters)
        batched = predictor.predict(paths)
        oracle.load_adapter_state_dict(adapters)
        with torch.no_grad():
            full = oracle(images).double().numpy()
        # float32 rounding of logit_scale * cos (scale 100); the paths agree to 1e-10 in float64 (test_adapters)
        np.testing.assert_allclose(batched, full, rtol=1e-5, atol=1e-4)
    assert work["prefix_images"] - before == len(paths)  # the frozen prefix ran once for 4 checkpoints


def test_remote_storage_uploads_outputs_and_reuses_cache(
    study: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An experiment behind a non-local pyarrow filesystem: outputs land in <experiment>/analysis."""
    import pyarrow.fs as pafs

    remote = tmp_path / "bucket"
    shutil.copytree(study["root"], remote / "exp", ignore=shutil.ignore_patterns("prefix_cache"))
    fs = pafs.SubTreeFileSystem(str(remote), pafs.LocalFileSystem())  # not a LocalFileSystem: the URI path
    monkeypatch.setattr(gather, "open_experiment", lambda experiment, storage=None: (fs, experiment))
    opts = Options(datasets=["things"], evalsets_file=str(study["evalsets"]))
    assert analyze("exp", opts, storage="mock://", log=lambda m: None).computed == 4
    assert (remote / "exp" / "analysis" / "results.parquet").is_file()
    assert analyze("exp", opts, storage="mock://", log=lambda m: None).computed == 0


def test_searcher_trials_differing_only_in_searched_values_stay_apart(study: dict, tmp_path: Path) -> None:
    """Two Tune trials of a searcher (no run_name in params.json, run_name 'run' in meta) that differ only in
    lr and dora_alpha: two trials, each with its own checkpoints, lr and dora_alpha as columns."""
    exp = tmp_path / "exp" / "trials"
    for n, (lr, alpha) in enumerate([(1e-3, 8.0), (1e-4, 16.0)]):
        trial = exp / f"train_hba_{n:05d}"
        for i, epoch in enumerate(ckpt.list_epochs(study["baseline"])):
            target = trial / f"checkpoint_{i:06d}"
            shutil.copytree(ckpt.epoch_dir(study["baseline"], epoch), target)
            meta = json.loads((target / "meta.json").read_text())
            meta["config"].update(lr=lr, dora_alpha=alpha, run_name="run")
            meta["metrics"] = [{**row, "val_loss": row["val_loss"] / (n + 1)} for row in meta["metrics"]]
            (target / "meta.json").write_text(json.dumps({**meta, "run_name": "run"}))
        (trial / "params.json").write_text(json.dumps({"lr": lr, "dora_alpha": alpha}))
        (trial / "result.json").write_text(json.dumps({"trial_id": f"ab12c_{n:05d}"}) + "\n")
    (tmp_path / "exp" / "study.json").write_text(json.dumps({"metric": "val_loss", "mode": "min", "trials": {}}))
    fs, root = gather.open_experiment(str(tmp_path / "exp"))
    found = gather.gather(fs, root)
    assert sorted(found.trials) == ["ab12c_00000", "ab12c_00001"]
    for tid, folder in (("ab12c_00000", "train_hba_00000"), ("ab12c_00001", "train_hba_00001")):
        # every epoch of each trial, none spliced in from the other
        assert [(e.epoch, e.checkpoint.path.split("/")[-2]) for e in found.entries if e.trial_id == tid] == [
            (-1, folder),
            (0, folder),
            (1, folder),
        ]
    from analysis import tables

    settings = tables.settings_table(found).set_index("trial_id")
    assert settings.loc["ab12c_00000", "lr"] == 1e-3 and settings.loc["ab12c_00001", "dora_alpha"] == 16.0
    training = tables.training_table(found)
    assert training.groupby("trial_id").size().to_dict() == {"ab12c_00000": 3, "ab12c_00001": 3}
    from analysis.best_trial import best_trial_summary

    own = training[training["epoch"] >= 0]
    best = own.loc[own["val_loss"].idxmin()]
    line = best_trial_summary(str(tmp_path / "exp"))
    assert best["trial_id"] in line and f"lr={best['lr']}" in line


def test_published_run_folders_analyse_like_our_runs(study: dict, tmp_path: Path) -> None:
    """Our baseline and fork rewritten as published run folders (training_res.csv, dora_params/,
    training_config.yaml): the same numbers per epoch, the fork paired with its baseline in summary.parquet."""
    import yaml

    from hba_sweep.model.adapters import to_published_keys

    root = tmp_path / "published"
    config = ckpt.read_meta(ckpt.epoch_dir(study["baseline"], 0))["config"]
    for run, name, epochs, perturb in (
        (study["baseline"], "baseline_seed1", [0, 1], {}),
        (
            study["fork"],
            "training_run1",
            [1],
            {
                "perturb_type": "label_shuffle",
                "perturb_epoch": 1,
                "perturb_length": 1,
                "perturb_seed": config["perturb_seed"],
            },
        ),
    ):
        dest = root / name
        (dest / "dora_params").mkdir(parents=True)
        for e in epochs:
            torch.save(
                to_published_keys(ckpt.load_adapters(ckpt.epoch_dir(run, e))),
                dest / "dora_params" / f"epoch{e}_dora_params.pth",
            )
        metrics = pd.read_csv(run / "metrics.csv")
        metrics = metrics[metrics["epoch"] >= 0].rename(columns={"val_loss": "test_loss"})
        metrics[["epoch", "train_loss", "test_loss", "behavioral_rsa_rho", "behavioral_rsa_p"]].to_csv(
            dest / "training_res.csv", index=False
        )
        published = {
            "training_mode": "finetune",
            "clip_hba_backbone": config["backbone"],
            "pretrained": "none",
            "vision_layers": config["vision_layers"],
            "transformer_layers": config["transformer_layers"],
            "rank": config["rank"],
            "random_seed": config["random_seed"],
            "lr": config["lr"],
            "perturb_type": "none",
            "perturb_epoch": None,
            "perturb_length": None,
            "perturb_seed": None,
            **perturb,
        }
        (dest / "training_config.yaml").write_text(yaml.safe_dump(published))
    opts = Options(datasets=["things"], evalsets_file=str(study["evalsets"]))
    ours = analyze(str(study["root"]), opts, str(tmp_path / "ours"), log=lambda m: None).results
    theirs = analyze(str(root), opts, str(tmp_path / "theirs"), log=lambda m: None)
    assert set(theirs.results["trial_id"]) == {"baseline_seed1", "training_run1"}
    got = theirs.results.set_index(["trial_label", "epoch"])["value"]
    base, fork = study["baseline"].name, study["fork"].name
    want = ours.set_index(["trial_label", "epoch"])["value"]
    for (label, epoch), value in got.items():
        mine = base if label == "baseline_seed1" else fork
        assert value == pytest.approx(want[(mine, epoch)], abs=1e-5)
    summary = theirs.summary
    assert summary["trial_id"].tolist() == ["training_run1"] and summary["baseline_id"].tolist() == ["baseline_seed1"]
    assert np.isfinite(summary["max_alignment_deviation"]).all()


def test_non_finite_predictions_give_nan_rows_and_a_diverged_trial(
    study: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A diverged checkpoint (NaN predictions) does not stop analyze: its rows hold NaN, the report names it."""
    fork_adapters = ckpt.load_adapters(ckpt.epoch_dir(study["fork"], 1))
    original = Predictor.predict
    state = {}

    def load(self, adapters, source="<adapters>"):
        state["fork"] = all(torch.equal(adapters[k], fork_adapters[k]) for k in fork_adapters)
        return Predictor.__dict__["_orig_load"](self, adapters, source)

    def predict(self, paths):
        out = original(self, paths)
        return np.full_like(out, np.nan) if state.get("fork") else out

    monkeypatch.setattr(Predictor, "_orig_load", Predictor.load, raising=False)
    monkeypatch.setattr(Predictor, "load", load)
    monkeypatch.setattr(Predictor, "predict", predict)
    out = tmp_path / "a"
    summary = analyze(
        str(study["root"]),
        Options(datasets=["things", "nights", "cka"], evalsets_file=str(study["evalsets"])),
        str(out),
        log=lambda m: None,
    )
    results = summary.results
    fork = results["trial_label"] == study["fork"].name
    bad = results[fork & (results["epoch"] == 1)]
    assert len(bad) == 1 + 1 + 2 and bad["value"].isna().all()  # same references and metrics, NaN values
    assert results.loc[~(fork & (results["epoch"] == 1)), "value"].notna().all()
    report = (out / "report.md").read_text()
    fork_id = bad["trial_id"].iloc[0]
    assert f"- {fork_id}: non-finite" in report
