"""The demo study on a simulated two-node Ray cluster with a shared storage path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster  # noqa: E402
from ray.tune import ExperimentAnalysis  # noqa: E402

from hba_sweep.sweep.runner import RunOptions, run_study  # noqa: E402
from hba_sweep.sweep.spec import load_search_space  # noqa: E402

# .ci/run's second step (-m long): a real cluster, storage or tracker end to end
pytestmark = [pytest.mark.slow, pytest.mark.long]
ROOT = Path(__file__).resolve().parent.parent


INNER = "HBA_TEST_CLUSTER_INNER"


@pytest.mark.timeout(600)
def test_demo_study_on_two_nodes(tmp_path, monkeypatch):
    if os.environ.get(INNER) != "1":
        # cluster_utils starts its nodes without token authentication and without a dashboard (which is
        # how `run` tells such a cluster apart): the driver must say RAY_AUTH_MODE=disabled, and Ray reads
        # that once per process, so this test runs in a process of its own (else it changes the auth
        # mode of every later in-process Ray of the test session, or inherits an earlier one's)
        env = {
            **os.environ,
            INNER: "1",
            "RAY_AUTH_MODE": "disabled",
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        }
        env.pop("HBA_SWEEP_FAULT", None)
        inner = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-x",
                "-m",
                "long",  # this file's marker (the default run leaves it out)
                f"{__file__}::test_demo_study_on_two_nodes",
                "--basetemp",
                str(tmp_path / "inner"),
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=540,
        )
        assert inner.returncode == 0, inner.stdout[-4000:] + inner.stderr[-2000:]
        return
    monkeypatch.setenv("HBA_DEMO_DATA", str(tmp_path / "demo"))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    try:
        cluster.wait_for_nodes()
        storage = tmp_path / "shared"
        space = load_search_space(ROOT / "search_spaces" / "demo.py")
        outcome = run_study(space, RunOptions(storage=str(storage), address=cluster.address, verbose=0))
        assert outcome.exit_code == 0 and len(outcome.ok) == 10
    finally:
        ray.shutdown()
        cluster.shutdown()
    nodes = set()
    analysis = ExperimentAnalysis(str(storage / "demo"))  # the whole study: one experiment
    assert len(analysis.trials) == 10
    if True:
        for trial in analysis.trials:
            df = analysis.trial_dataframes[trial.trial_id]
            nodes |= set(df["node_id"])
            trial_dir = Path(trial.path)
            assert trial_dir.is_relative_to(storage)
            checkpoints = sorted(trial_dir.glob("checkpoint_*"))
            assert len(checkpoints) == len(df)  # every reported epoch's checkpoint is in the storage path
            assert all((c / "adapter.safetensors").is_file() and (c / "meta.json").is_file() for c in checkpoints)
    assert len(nodes) == 2, nodes  # trials ran on both nodes
    assert os.path.isfile(storage / "demo" / "study.json")
