"""YAML search spaces: the shipped twins give the Python forms' dry-run tables, mistakes name file, line
and fix, nothing is executed, and `run --submit` of a YAML study sends no code (no Ray cluster needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hba_sweep.cli import main
from hba_sweep.foundation.errors import SearchSpaceError
from hba_sweep.sweep import jobs
from hba_sweep.sweep.options import RunOptions
from hba_sweep.sweep.spec import instantiate, load_search_space

ROOT = Path(__file__).resolve().parent.parent
TWINS = sorted(p.stem for p in (ROOT / "search_spaces").glob("*.py"))


def dry_run(path: Path, capsys) -> list[str]:
    assert main(["run", str(path), "--dry-run"]) == 0
    return capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("stem", TWINS)
def test_every_shipped_study_has_a_yaml_twin_with_the_same_table(stem, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HBA_DEMO_DATA", str(tmp_path / "demo"))
    python = dry_run(ROOT / "search_spaces" / f"{stem}.py", capsys)
    data = dry_run(ROOT / "search_spaces" / f"{stem}.yaml", capsys)
    assert python[0].endswith(f"{stem}.py (experiment '{stem}')")
    assert data[0].endswith(f"{stem}.yaml (experiment '{stem}')")
    assert python[1:] == data[1:]
    assert not (tmp_path / "demo").exists()  # prepare: demo_data runs with `run`, never with --dry-run


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


BASE = "base_config: {demo}/train.yaml\n"


def test_searcher_and_scheduler_are_built_from_data(tmp_path):
    space = load_search_space(ROOT / "search_spaces" / "hparams_optuna.yaml")
    searcher, scheduler = instantiate(space, "SEARCH_ALG"), instantiate(space, "SCHEDULER")
    assert type(searcher).__name__ == "OptunaSearch" and type(scheduler).__name__ == "AsyncHyperBandScheduler"
    assert scheduler._max_t == 31 and space.metric == "val_loss" and space.num_samples == 40


@pytest.mark.parametrize(
    "text, line, expected",
    [
        ("name: x\nnum_sample: 3\n", 2, "unknown key 'num_sample'. Fix: did you mean num_samples?"),
        ("param_space:\n  lr: {loguniform: [0, 1e-3]}\n", 2, "param_space.lr: loguniform [0, 0.001] is not valid"),
        ("param_space:\n  lr: {loguniform: [1e-3, 1e-5]}\n", 2, "with 0 < low < high"),
        ("param_space:\n  rank: {choose: [4, 8]}\n", 2, "did you mean choice?"),
        (
            "param_space: {epochs: 2}\nscheduler: {asha: {max_epochs: 3}}\nmetric: val_loss\nmode: min\n",
            2,
            "scheduler: asha has no setting 'max_epochs'. Fix: use some of time_attr, metric, mode, max_t",
        ),
        ("param_space: {epochs: 2}\nsearch_alg: optunaa\n", 2, "did you mean optuna?"),
        ("param_space: {epochs: 2}\nnum_samples: 0\n", 2, "num_samples=0 must be at least 1. Fix:"),
        ("param_space: {epochs: 2}\nmode: up\n", 2, "mode='up' must be 'min' or 'max'"),
        ("param_space: {epochs: 2}\nprepare: rm_rf\n", 2, "not a preparation a YAML study can ask for"),
        ("param_space:\n  epochs: [1, 2\n", 3, "not valid YAML"),
    ],
)
def test_mistakes_name_file_line_and_fix(tmp_path, demo_dir, line, text, expected):
    path = write(tmp_path, BASE.format(demo=demo_dir) + text if "base_config" not in text else text)
    offset = 1 if "base_config" not in text else 0
    with pytest.raises(SearchSpaceError) as err:
        load_search_space(path)
    message = str(err.value)
    assert f"{path}:{line + offset}: " in message and expected in message and "Fix:" in message, message


def test_trial_mistake_in_every_trial_is_said_once_with_its_line(tmp_path, demo_dir, capsys):
    path = write(
        tmp_path,
        BASE.format(demo=demo_dir) + "param_space:\n  epochs: 2\n  lr: -1\n"
        "  perturb_epoch: {grid_search: [0, 1, 2]}\n  perturb_type: random_target\n",
    )
    assert main(["run", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("lr=-1.0 must be positive") == 1, err
    assert f"{path}:4: in all 3 trials: lr=-1.0 must be positive" in err and "Fix:" in err


def test_loading_executes_nothing(tmp_path, demo_dir):
    marker = tmp_path / "ran"
    path = write(
        tmp_path,
        BASE.format(demo=demo_dir) + f"param_space:\n  epochs: !!python/object/apply:os.system ['touch {marker}']\n",
    )
    with pytest.raises(SearchSpaceError, match="not valid YAML"):
        load_search_space(path)
    assert not marker.exists()


def test_submit_of_a_yaml_study_sends_no_code(tmp_path, demo_dir, monkeypatch):
    sent = {}

    class Jobs:
        def submit_job(self, **kwargs):
            sent.update(kwargs)

    monkeypatch.setattr(jobs, "client", lambda url: Jobs())
    path = write(tmp_path, BASE.format(demo=demo_dir) + "name: shared\nparam_space: {epochs: 2}\n")
    opts = RunOptions(storage=str(tmp_path / "rr"))
    assert jobs.submit(str(path), opts, "http://127.0.0.1:8265", echo=lambda line: None) == 0
    assert "runtime_env" not in sent or not sent["runtime_env"]  # no working_dir, no py_modules: only the command
    assert sent["entrypoint"].split()[3:5] == ["run", str(path)]


def test_demo_twin_prepares_its_data(tmp_path, monkeypatch):
    from hba_sweep.sweep.runner import prepare

    monkeypatch.setenv("HBA_DEMO_DATA", str(tmp_path / "demo"))
    space = load_search_space(ROOT / "search_spaces" / "demo.yaml")
    assert space.missing_base == tmp_path / "demo" / "train.yaml" and space.evalsets == str(
        tmp_path / "demo" / "evalsets.yaml"
    )
    space = prepare(space)  # what `run` does first: generate the demo data, read the base config it wrote
    assert (tmp_path / "demo" / "train.yaml").is_file() and space.base["backbone"] == "hba-tiny"


def test_alias_bomb_in_a_yaml_search_space_is_refused(tmp_path, capsys):
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"{b}: &{b} [{', '.join(['*' + a] * 10)}]" for a, b in zip("abcdefgh", "bcdefghi", strict=True)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\nname: bomb\n")
    code = main(["run", str(path), "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and f"{path}: the YAML expands to more than" in err and "Traceback" not in err, err
