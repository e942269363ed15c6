"""Wall time and slot utilisation of a study: one experiment with dependency-aware release vs phases.

The study: 1 baseline + 8 forks (2 perturbation types x perturb_epoch 0..3, length 1), 4 epochs,
on 4 concurrent slots (a local Ray with 4 CPUs, 1 CPU per trial). Trials run through the real
runner (``run_study``: Tune, the searcher, checkpoints on storage) with the sleep stand-in
(``tests/support/sleep_trainable.py``): every epoch, the initial evaluation included, sleeps
``--seconds``.

Measured: the busy slot-seconds (each trial from its first epoch's start to its last epoch's end)
and the study's wall time from the first epoch's start to the last epoch's end (Tune's scheduling
gaps between trials included; Ray's one-off worker start-up before the first epoch, which the
phased design pays once per phase, is printed separately). Utilisation = busy / (slots x wall).
The phased design (all baselines, then all forks, as before) is computed from the same measured
trial durations: the baseline's duration, plus the forks list-scheduled in plan order on the
slots, with no gap between trials, which favours it.

    python benchmarks/study_schedule.py [--seconds 2] [--slots 4]
"""

from __future__ import annotations

import argparse
import heapq
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SPACE = """
from ray import tune
NAME = "schedule"
BASE_CONFIG = {base!r}
PARAM_SPACE = {{"backbone": "hba-tiny", "pretrained": "none", "device": "cpu", "epochs": 4,
    "perturb_type": tune.grid_search(["label_shuffle", "random_target"]),
    "perturb_epoch": tune.grid_search([0, 1, 2, 3]), "perturb_length": 1}}
RESOURCES = {{"cpu": 1}}
MAX_FAILURES = 0
"""


def spans(root: Path, seconds: float) -> dict[str, tuple[float, float]]:
    """(start, end) of each trial's own epochs, from its last checkpoint's metrics rows."""
    out = {}
    for trial in root.glob("cliphba_*/"):
        meta = json.loads(sorted(trial.glob("checkpoint_*/meta.json"))[-1].read_text())
        own = [r["ended"] for r in meta["metrics"] if not r.get("inherited")]
        out[trial.name] = (min(own) - seconds, max(own))
    return out


def list_schedule(durations: list[float], slots: int) -> float:
    """Makespan of jobs started in order on the first free slot."""
    free = [0.0] * slots
    for d in durations:
        heapq.heappush(free, heapq.heappop(free) + d)
    return max(free)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="sleep per epoch (default 2)")
    parser.add_argument("--slots", type=int, default=4)
    args = parser.parse_args()

    import functools

    import ray

    from hba_sweep.sweep.runner import RunOptions, run_study
    from hba_sweep.sweep.spec import load_search_space
    from hba_sweep.training.demo_data import make_demo_data
    from tests.support.sleep_trainable import sleep_training
    from tests.support.stand_in import training

    tmp = Path(tempfile.mkdtemp(prefix="hba_schedule_"))
    make_demo_data(tmp / "demo", n_train=40)
    (tmp / "space.py").write_text(SPACE.format(base=str(tmp / "demo" / "train.yaml")))
    ray.init(num_cpus=args.slots, include_dashboard=False, log_to_driver=False)
    try:
        started = time.time()
        with training(functools.partial(sleep_training, seconds=args.seconds)):
            outcome = run_study(
                load_search_space(tmp / "space.py"),
                RunOptions(storage=str(tmp / "rr"), verbose=0, max_concurrent=args.slots),
            )
        wall = time.time() - started
    finally:
        ray.shutdown()
    assert outcome.exit_code == 0 and len(outcome.ok) == 9, outcome
    trials = spans(Path(outcome.root), args.seconds)
    durations = {name: end - start for name, (start, end) in trials.items()}
    busy = sum(durations.values())
    base = next(d for n, d in durations.items() if n.endswith("_baseline"))
    forks = [
        durations[n] for n in sorted(durations, key=lambda n: (n.split("_e")[-1], n)) if not n.endswith("_baseline")
    ]
    phased = base + list_schedule(forks, args.slots)
    first = min(s for s, _ in trials.values())
    last = max(e for _, e in trials.values())
    schedule = last - first
    print(
        f"study: 1 baseline + 8 forks (perturb_epoch 0-3), 4 epochs, {args.seconds:g} s per epoch, "
        f"{args.slots} slots; busy {busy:.1f} slot-s"
    )
    print(
        f"one experiment, measured: whole run_study {wall:.1f} s, of which Ray worker start-up before the first "
        f"epoch {first - started:.1f} s; first epoch start to last epoch end {schedule:.1f} s"
    )
    print(f"phased design, computed from the same trial durations (no start-up counted): {phased:.1f} s")
    print(f"wall ratio (one experiment / phased), first epoch to last: {schedule / phased:.2f}")
    print(
        f"slot utilisation (busy / slots x wall), first epoch to last: one experiment {busy / (args.slots * schedule):.2f}, "
        f"phased {busy / (args.slots * phased):.2f}; whole run_study: {busy / (args.slots * wall):.2f}"
    )


if __name__ == "__main__":
    main()
