"""Search-space loading, expansion, validation, planning and dry-runs (no Ray cluster needed)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from hba_sweep.cli import main
from hba_sweep.foundation.errors import SearchSpaceError
from hba_sweep.foundation.faults import maybe_fault
from hba_sweep.sweep.expand import expand
from hba_sweep.sweep.plan import make_plan
from hba_sweep.sweep.spec import load_search_space
from trainables.hba_trainable import choose_device

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "search_spaces").glob("*.py"))
OK_BASE = "BASE_CONFIG = {'backbone': 'hba-tiny', 'pretrained': 'none', 'epochs': 4, 'behavioral_rsa': False}\n"


def write_space(tmp_path: Path, body: str, name: str = "space.py") -> Path:
    path = tmp_path / name
    path.write_text("from ray import tune\n" + textwrap.dedent(body))
    return path


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_dry_run_every_shipped_space(path, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HBA_DEMO_DATA", str(tmp_path / "demo"))  # missing: the dry run must not create it
    assert main(["run", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "trials" in out and "dry run: nothing was started" in out
    assert not (tmp_path / "demo").exists()


def test_dry_run_counts_perturb_length(capsys):
    assert main(["run", str(ROOT / "search_spaces" / "perturb_length.py"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "193 trials: 1 baselines + 192 perturbed" in out
    assert "`run` would refuse to start" in out and "data/things/images'" in out and "things_vitl14.yaml" in out


BAD_SPACES = [
    ("missing_param_space", OK_BASE, "PARAM_SPACE is missing"),
    ("missing_base", "PARAM_SPACE = {}\n", "BASE_CONFIG is missing"),
    ("misspelt_name", OK_BASE + "PARAM_SPACE = {}\nNUM_SAMPLE = 3\n", "did you mean NUM_SAMPLES?"),
    ("misspelt_param_space", OK_BASE + "PARAMS_SPACE = {}\n", "did you mean PARAM_SPACE?"),
    ("syntax_error", OK_BASE + "PARAM_SPACE = {\n", "syntax error"),
    ("raises", OK_BASE + "PARAM_SPACE = {}\n1 / 0\n", "ZeroDivisionError"),
    (
        "unknown_key",
        OK_BASE + "PARAM_SPACE = {'learning_rate': tune.grid_search([1e-3, 1e-4])}\n",
        "unknown key 'learning_rate'",
    ),
    (
        "bad_value_listed_per_trial",
        OK_BASE + "PARAM_SPACE = {'rank': tune.grid_search([4, 0, -1])}\n",
        "2 of 3 trials are invalid",
    ),
    (
        "window_past_end",
        OK_BASE + "PARAM_SPACE = {'perturb_type': 'label_shuffle', "
        "'perturb_epoch': tune.grid_search([1, 3]), 'perturb_length': 2}\n",
        "runs past the last epoch",
    ),
    (
        "unknown_perturbation",
        OK_BASE + "PARAM_SPACE = {'perturb_type': tune.grid_search(['label_shufle'])}\n",
        "not a known perturbation",
    ),
    ("bad_resources", OK_BASE + "PARAM_SPACE = {}\nRESOURCES = {'gpus': 1}\n", "RESOURCES['gpus'] is not a resource"),
    ("bad_mode", OK_BASE + "PARAM_SPACE = {}\nMETRIC = 'val_loss'\nMODE = 'minimum'\n", "MODE='minimum'"),
    ("scheduler_without_metric", OK_BASE + "PARAM_SPACE = {}\nSCHEDULER = object\n", "need METRIC and MODE"),
    ("base_yaml_missing", "BASE_CONFIG = 'nope.yaml'\nPARAM_SPACE = {}\n", "nope.yaml: no such YAML file"),
    (
        "grid_with_searcher",
        OK_BASE + "PARAM_SPACE = {'lr': tune.grid_search([1e-3])}\nMETRIC = 'val_loss'\n"
        "MODE = 'min'\nSEARCH_ALG = lambda: None\n",
        "grid_search together with SEARCH_ALG",
    ),
    ("num_samples_zero", OK_BASE + "PARAM_SPACE = {}\nNUM_SAMPLES = 0\n", "NUM_SAMPLES=0 must be at least 1"),
    ("param_space_not_dict", OK_BASE + "PARAM_SPACE = [1, 2]\n", "PARAM_SPACE must be a dict"),
]


@pytest.mark.parametrize("case,body,expected", BAD_SPACES, ids=[c[0] for c in BAD_SPACES])
def test_bad_search_space_rejected_without_traceback(case, body, expected, tmp_path, capsys):
    path = write_space(tmp_path, body)
    assert main(["run", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert str(path) in err and "Fix" in err and "Traceback" not in err


def test_not_a_file_and_not_a_search_space(tmp_path, capsys):
    assert main(["run", str(tmp_path / "absent.py"), "--dry-run"]) == 2
    (tmp_path / "space.txt").write_text("a: 1\n")
    assert main(["run", str(tmp_path / "space.txt"), "--dry-run"]) == 2
    (tmp_path / "space.yaml").write_text("a: 1\n")
    assert main(["run", str(tmp_path / "space.yaml"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "no such search-space file" in err and "must be a Python (.py) or YAML (.yaml) file" in err
    assert f"{tmp_path / 'space.yaml'}:1: unknown key 'a'" in err


def test_every_bad_trial_and_field_in_one_message(tmp_path):
    path = write_space(
        tmp_path, OK_BASE + "PARAM_SPACE = {'rank': tune.grid_search([0, 4]), 'lr': tune.grid_search([-1.0, 1e-3])}\n"
    )
    with pytest.raises(SearchSpaceError) as info:
        expand(load_search_space(path))
    message = str(info.value)
    assert "3 of 4 trials are invalid" in message
    assert message.count("rank=0 must be at least 1") == 1 and message.count("lr=-1.0 must be positive") == 1
    assert "in 2 of 4 trials (trial 0 (rank=0, lr=-1.0), trial 1 (rank=0, lr=0.001)): rank=0" in message


def test_plan_forks_from_baseline_epoch_before_window(tmp_path):
    path = write_space(
        tmp_path,
        OK_BASE + "PARAM_SPACE = {'random_seed': tune.grid_search([1, 2]), "
        "'perturb_type': tune.grid_search(['none', 'label_shuffle']), "
        "'perturb_epoch': tune.grid_search([0, 2])}\n",
    )
    plan = make_plan(expand(load_search_space(path)).trials, fork_from_baseline=True)
    assert len(plan.baselines) == 2  # the grid's own 'none' trials are the baselines, once per seed
    assert sorted((f.trial.config["perturb_epoch"], f.init_epoch) for f in plan.forks) == [(0, None)] * 2 + [(2, 1)] * 2
    for fork in plan.forks:
        assert f"seed{fork.trial.config['random_seed']}_baseline" in fork.baseline
    assert make_plan(expand(load_search_space(path)).trials, fork_from_baseline=False).phases == ["trials"]


def test_trial_names_follow_run_names_and_stay_unique(tmp_path):
    path = write_space(
        tmp_path,
        OK_BASE + "PARAM_SPACE = {'lr': tune.grid_search([1e-3, 1e-4]), 'weight_decay': tune.uniform(0, 0.1)}\n"
        "NUM_SAMPLES = 2\n",
    )
    names = [t.name for t in expand(load_search_space(path)).trials]
    assert len(set(names)) == 4
    assert names[0].startswith("cliphba_dora_hba-tiny_r32_v2_t1_seed1_baseline_lr0.001")


def test_searcher_space_validates_samples(tmp_path):
    path = write_space(
        tmp_path,
        OK_BASE + "PARAM_SPACE = {'rank': tune.choice([4, 0])}\nMETRIC = 'val_loss'\n"
        "MODE = 'min'\nSEARCH_ALG = lambda: None\n",
    )
    with pytest.raises(SearchSpaceError, match="rank=0"):
        expand(load_search_space(path))


def test_device_falls_back_to_cpu_saying_so_once(capsys):
    assert choose_device("auto", [0], cuda_available=True) == ("cuda:0", "")
    assert choose_device("auto", [], cuda_available=False) == ("cpu", "")
    assert choose_device("cpu", ["7"], cuda_available=True) == ("cpu", "")
    for _ in range(2):
        device, note = choose_device("auto", ["7"], cuda_available=False, trial="t1")
        assert device == "cpu" and "GPU id(s) 7" in note
    assert capsys.readouterr().out.count("CUDA is not available here: training on CPU") == 1


def test_fault_hook_fires_once(tmp_path, monkeypatch):
    monkeypatch.setenv("HBA_SWEEP_FAULT", f"epoch:2:{tmp_path / 'marker'}:victim")
    maybe_fault("other", 2)
    maybe_fault("the_victim", 1)
    with pytest.raises(RuntimeError, match="injected failure"):
        maybe_fault("the_victim", 2)
    maybe_fault("the_victim", 2)  # the marker exists: no second failure


def test_storage_uri_parts_go_before_the_query_and_credentials_are_not_shown():
    from hba_sweep.foundation import storage

    root = storage.experiment_root(
        "s3://KEY:SECRET@bucket/studies?endpoint_override=localhost:9000&secret_key=abc", "demo"
    )
    assert root == "s3://KEY:SECRET@bucket/studies/demo?endpoint_override=localhost:9000&secret_key=abc"
    assert storage.join(root, "baselines", "t1").startswith("s3://KEY:SECRET@bucket/studies/demo/baselines/t1?")
    assert storage.experiment_root("s3://bucket/", "demo") == "s3://bucket/demo"
    shown = storage.redact(root)
    assert "SECRET" not in shown and "abc" not in shown and "KEY" not in shown
    assert shown == "s3://***@bucket/studies/demo?endpoint_override=localhost:9000&secret_key=***"
    assert storage.redact("/data/rr/demo") == "/data/rr/demo"


@pytest.mark.parametrize("name", ["../elsewhere", "a/b", ""])
def test_name_option_follows_the_name_rule(name, capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", str(ROOT / "search_spaces" / "demo.py"), "--name", name, "--dry-run"])
    assert info.value.code == 2 and "not a valid experiment name" in capsys.readouterr().err
