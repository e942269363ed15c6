"""Soak: 50 short trials on 2 CPUs, at most 2 at a time (``pytest -m soak``; not in the default run).

Checks that every trial finished, that the driver's memory stays flat (RSS after the 10th
finished trial vs after the 50th: growth below RSS_GROWTH_BOUND_MB, both printed), that the
driver's open descriptors do not grow across trials, and that after ``ray.shutdown()`` no child
process is left and no file other than Ray core's own session logs is still open.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest
import ray
from ray.tune import Callback  # noqa: E402

from hba_sweep.sweep import runner  # noqa: E402
from hba_sweep.sweep.runner import RunOptions, run_study  # noqa: E402
from hba_sweep.sweep.spec import load_search_space  # noqa: E402
from hba_sweep.training.demo_data import make_demo_data  # noqa: E402

pytestmark = pytest.mark.soak
N_TRIALS = 50
RSS_GROWTH_BOUND_MB = 100.0  # driver RSS growth allowed between the 10th and the 50th finished trial
FD_SLACK = 2  # descriptor count may differ by this much between the 10th and the 50th trial


def open_fds() -> dict[str, str]:
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    return out


class RssPerTrial(Callback):
    """Driver RSS (MB) and open descriptors each time a trial completes."""

    def __init__(self) -> None:
        self.rss: list[float] = []
        self.fds: list[int] = []
        self.running: set[str] = set()
        self.most_running = 0

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running.add(trial.trial_id)
        self.most_running = max(self.most_running, len(self.running))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)
        self.rss.append(psutil.Process().memory_info().rss / 2**20)
        self.fds.append(psutil.Process().num_fds())


def test_soak_50_trials(tmp_path, monkeypatch):
    monkeypatch.delenv("HBA_SWEEP_FAULT", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    data = tmp_path / "demo"
    make_demo_data(data, n_train=40)
    space_file = tmp_path / "soak.py"
    space_file.write_text(f"""
from ray import tune

NAME = "soak"
BASE_CONFIG = {str(data / "train.yaml")!r}
PARAM_SPACE = {{"backbone": "hba-tiny", "pretrained": "none", "device": "cpu", "batch_size": 20,
               "random_seed": tune.grid_search(list(range({N_TRIALS // 2}))), "epochs": tune.grid_search([1, 2])}}
RESOURCES = {{"cpu": 1}}
FORK_FROM_BASELINE = False
MAX_FAILURES = 0
""")
    rss = RssPerTrial()
    monkeypatch.setattr(runner, "_callbacks", lambda opts, name, root=None: [rss])
    me = psutil.Process()
    fds_before = me.num_fds()
    open_before = open_fds()  # the terminal, a log file, pytest's capture files: not the study's
    children_before = {p.pid for p in me.children(recursive=True)}

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        outcome = run_study(
            load_search_space(space_file), RunOptions(storage=str(tmp_path / "rr"), max_concurrent=2, verbose=0)
        )
    finally:
        ray.shutdown()

    assert outcome.exit_code == 0 and len(outcome.ok) == N_TRIALS, (outcome.failed, outcome.interrupted)
    trial_dirs = sorted(Path(outcome.root).glob("cliphba_*"))
    assert len(trial_dirs) == N_TRIALS
    for trial in trial_dirs:
        epochs = (trial / "run" / "metrics.csv").read_text().splitlines()[1:]
        assert len(epochs) in (2, 3), trial.name  # epoch -1 plus 1 or 2 epochs

    assert len(rss.rss) == N_TRIALS and rss.most_running <= 2  # --max-concurrent 2
    growth = rss.rss[-1] - rss.rss[9]
    print(
        f"\ndriver RSS: {rss.rss[9]:.0f} MB after 10 trials, {rss.rss[-1]:.0f} MB after {N_TRIALS} "
        f"(growth {growth:+.1f} MB, bound {RSS_GROWTH_BOUND_MB:.0f} MB); max {max(rss.rss):.0f} MB"
    )
    assert growth < RSS_GROWTH_BOUND_MB

    leftover = psutil.wait_procs([p for p in me.children(recursive=True) if p.pid not in children_before], timeout=30)[
        1
    ]
    assert not leftover, [(p.pid, p.name()) for p in leftover]
    fds_after = me.num_fds()
    print(
        f"driver open file descriptors: {fds_before} before the study, {rss.fds[9]} after 10 trials, "
        f"{rss.fds[-1]} after {N_TRIALS}, {fds_after} after ray.shutdown()"
    )
    assert rss.fds[-1] <= rss.fds[9] + FD_SLACK, (rss.fds, open_fds())  # nothing leaks per trial
    # After shutdown the driver keeps only what Ray core itself keeps per session (its log files under
    # /tmp/ray/session_*, event fds, pipes): no file of the study, the data or the trials stays open.
    kept = [
        t
        for t in open_fds().values()
        if t.startswith("/") and not t.startswith(("/dev/", "/tmp/ray/")) and t not in open_before.values()
    ]  # (Ray duplicates the driver's stdout/stderr descriptors)
    assert not kept, kept
