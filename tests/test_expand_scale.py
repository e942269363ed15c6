"""Expansion at scale: trials planned twice are refused, names stay as they were, and naming, duplicate
finding, file checks and planning do work linear in the number of trials (counted, not timed)."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import numpy as np
import pytest
from ray import tune
from ray.tune.search.variant_generator import generate_variants

from hba_sweep.cli import main
from hba_sweep.config import DEFAULTS
from hba_sweep.foundation.errors import SearchSpaceError
from hba_sweep.sweep import expand as expand_module
from hba_sweep.sweep.expand import Trial, _resolved, expand
from hba_sweep.sweep.naming import duplicates, name_trials
from hba_sweep.sweep.plan import make_plan
from hba_sweep.sweep.spec import load_search_space

ROOT = Path(__file__).resolve().parent.parent
# sha256 of every planned name (baselines, then "fork baseline init_epoch") of the shipped grids, as
# named before naming became linear: existing studies find their trial folders by these names
NAMES = {
    "demo": (10, "1cdbe1d01f864626"),
    "perturb_length": (193, "a8572acf7f5ef2e4"),
    "perturb_types": (13, "0e92cc749dbb7b6d"),
    "seeds": (20, "9caf142cde8513db"),
    "single_epoch": (31, "f539196a08dd141e"),
}


def write_space(folder: Path, body: str, name: str = "space.py") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


@pytest.mark.parametrize("suffix", [".py", ".yaml"])
@pytest.mark.parametrize("stem", sorted(NAMES))
def test_shipped_spaces_keep_their_trial_names(stem, suffix, monkeypatch, demo_dir):
    monkeypatch.setenv("HBA_DEMO_DATA", str(demo_dir))
    space = load_search_space(ROOT / "search_spaces" / f"{stem}{suffix}")
    plan = make_plan(expand(space).trials, space.fork_from_baseline)
    lines = [t.name for t in plan.baselines] + [f"{f.trial.name} {f.baseline} {f.init_epoch}" for f in plan.forks]
    assert (len(lines), hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]) == NAMES[stem]


def test_demo_names_spelled_out(monkeypatch, demo_dir):
    monkeypatch.setenv("HBA_DEMO_DATA", str(demo_dir))
    plan = make_plan(expand(load_search_space(ROOT / "search_spaces" / "demo.py")).trials, True)
    assert [t.name for t in plan.baselines] == [f"cliphba_dora_hba-tiny_r16_v2_t3_seed{s}_baseline" for s in (1, 2)]
    assert plan.forks[0].trial.name == "cliphba_dora_hba-tiny_r16_v2_t3_seed1_label_shuffle_e1_l1_ps42"


@pytest.mark.parametrize(
    ("grid", "shown"),
    [
        ("'perturb_epoch': tune.grid_search([1, 2, 1])", "trial 0 (perturb_epoch=1) = trial 2 (perturb_epoch=1)"),
        ("'lr': tune.grid_search([0.01, '1e-2'])", "trial 0 (lr=0.01) = trial 1 (lr='1e-2')"),
        ("'perturb_epoch': tune.grid_search([2, 2.0])", "trial 0 (perturb_epoch=2) = trial 1 (perturb_epoch=2.0)"),
    ],
)
def test_a_trial_planned_twice_is_refused_through_the_cli(grid, shown, demo_dir, tmp_path, capsys):
    path = write_space(
        tmp_path,
        f"""
        from ray import tune
        BASE_CONFIG = {str(demo_dir / "train.yaml")!r}
        PARAM_SPACE = {{"perturb_type": "label_shuffle", "perturb_epoch": 1, {grid}}}
        """,
    )
    assert main(["run", str(path), "--dry-run"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    assert "1 trial(s) of the grid repeat another trial (the same resolved config)" in err
    assert shown in err and "Fix: give each value once in a grid_search list" in err


def test_yaml_float_spellings_that_resolve_equal_are_one_trial(demo_dir, tmp_path, capsys):
    path = write_space(
        tmp_path,
        f"""
        base_config: {demo_dir / "train.yaml"}
        param_space:
          perturb_type: random_target
          perturb_epoch: 1
          lr: {{grid_search: [0.01, 1e-2, 0.005]}}
        """,
        "space.yaml",
    )
    assert main(["run", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"{path}: 1 trial(s) of the grid repeat another trial" in err and "trial 0 (lr=0.01) = trial 1" in err


def test_num_samples_over_a_pure_grid_is_refused_with_the_seed_fix(demo_dir, tmp_path):
    path = write_space(
        tmp_path,
        f"""
        from ray import tune
        BASE_CONFIG = {str(demo_dir / "train.yaml")!r}
        PARAM_SPACE = {{"random_seed": tune.grid_search([1, 2])}}
        NUM_SAMPLES = 3
        """,
    )
    with pytest.raises(SearchSpaceError) as info:
        expand(load_search_space(path))
    message = str(info.value)
    assert "4 trial(s)" in message and "NUM_SAMPLES = 3 repeats the grid, which draws no value of its own" in message
    assert "trial 0 (random_seed=1) = trial 2 (random_seed=1) = trial 4 (random_seed=1)" in message
    assert "vary random_seed (initialisation) or perturb_seed (perturbation)" in message
    assert "set NUM_SAMPLES = 1" in message


def test_num_samples_with_random_draws_makes_distinct_trials(demo_dir, tmp_path):
    path = write_space(
        tmp_path,
        f"""
        from ray import tune
        BASE_CONFIG = {str(demo_dir / "train.yaml")!r}
        PARAM_SPACE = {{"random_seed": tune.grid_search([1, 2]), "weight_decay": tune.uniform(0, 0.1)}}
        NUM_SAMPLES = 3
        """,
    )
    names = [t.name for t in expand(load_search_space(path)).trials]
    assert len(set(names)) == 6 and not any(name.endswith("_s1") for name in names)


def test_baselines_ignore_perturbation_settings(demo_dir, tmp_path):
    """Shared baselines: 'none' trials differing only in perturbation settings are one baseline (the
    seeds study's grid); trained from scratch each, they are the same trial twice and are refused."""
    body = f"""
        from ray import tune
        BASE_CONFIG = {str(demo_dir / "train.yaml")!r}
        PARAM_SPACE = {{"perturb_type": tune.grid_search(["none", "label_shuffle"]),
                        "perturb_seed": tune.grid_search([1, 2]), "perturb_epoch": 1}}
        """
    plan = make_plan(expand(load_search_space(write_space(tmp_path, body))).trials, True)
    assert len(plan.baselines) == 1 and len(plan.forks) == 2
    with pytest.raises(SearchSpaceError) as info:
        expand(load_search_space(write_space(tmp_path, body + "FORK_FROM_BASELINE = False\n", "own.py")))
    assert "a perturb_type: none trial ignores perturb_epoch" in str(info.value)
    assert "trial 0 (perturb_type='none', perturb_seed=1) = trial 1 (perturb_type='none', perturb_seed=2)" in str(
        info.value
    )


@pytest.mark.parametrize(
    "space",
    [
        {"b": {"grid_search": [1, 2, 3]}, "a": {"grid_search": ["x", "y"]}, "c": 4, "d": {"grid_search": [None]}},
        {"a": {"grid_search": [1, 2]}, "u": tune.uniform(0, 1)},  # not a plain grid: Ray Tune's own expansion
    ],
)
def test_plain_grid_expands_in_ray_tunes_order(space):
    ray = []
    rng = np.random.RandomState(0)
    for _ in range(2):
        ray += [resolved for _, resolved in generate_variants(space, random_state=rng)]
    assert [list(v.items()) for v in _resolved(space, 2)] == [list(v.items()) for v in ray]


class Counted(int):
    """An int that counts how often it is compared, hashed into a key or written out."""

    calls = 0

    def __eq__(self, other: object) -> bool:
        Counted.calls += 1
        return int(self) == other

    def __ne__(self, other: object) -> bool:
        Counted.calls += 1
        return int(self) != other

    def __hash__(self) -> int:
        Counted.calls += 1
        return int.__hash__(self)

    def __repr__(self) -> str:
        Counted.calls += 1
        return int.__repr__(self)


def test_naming_duplicates_and_planning_are_linear():
    """A setting every trial shares is compared a bounded number of times per trial (the quadratic
    naming compared it with every other trial's: n * n times)."""
    n = 3000
    rank = Counted(16)
    trials = [
        Trial(
            name="",
            config={
                **DEFAULTS.to_dict(),
                "rank": rank,
                "perturb_type": "label_shuffle",
                "perturb_epoch": i % 100,
                "random_seed": i // 100,
                "epochs": 200,
            },
            varied={"perturb_epoch": i % 100, "random_seed": i // 100},
        )
        for i in range(n)
    ]
    Counted.calls = 0
    name_trials(trials)
    assert Counted.calls <= 5 * n
    Counted.calls = 0
    assert duplicates([t.config for t in trials], baselines_shared=True) == []
    assert Counted.calls <= 5 * n
    Counted.calls = 0
    plan = make_plan(trials, fork_from_baseline=True)
    assert Counted.calls <= 5 * n
    assert len(plan.baselines) == 30 and len({t.name for t in trials}) == n


def test_data_files_are_checked_once_per_distinct_set_of_paths(demo_dir, tmp_path, monkeypatch):
    calls = []
    real = expand_module.file_problems
    monkeypatch.setattr(expand_module, "file_problems", lambda cfg, source: calls.append(source) or real(cfg, source))
    path = write_space(
        tmp_path,
        f"""
        from ray import tune
        BASE_CONFIG = {str(demo_dir / "train.yaml")!r}
        PARAM_SPACE = {{"epochs": 8, "perturb_type": "label_shuffle", "random_seed": tune.grid_search([1, 2, 3]),
                        "img_annotations_file": tune.grid_search([{str(demo_dir / "train.csv")!r}, "nowhere.csv"])}}
        """,
    )
    expansion = expand(load_search_space(path))
    assert len(expansion.trials) == 6 and len(calls) == 2
    assert expansion.missing_files == ["img_annotations_file='nowhere.csv': no such file. Fix: correct the path."]
