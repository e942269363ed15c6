"""Time and peak memory of ``run --dry-run``'s expansion path on large grids.

Each size is a generated grid space over the demo data (``python -m hba_sweep demo-data``):
``perturb_type`` (2) x ``perturb_epoch`` (a range) x ``perturb_length`` x ``perturb_seed`` x
``random_seed``, every trial a fork of its seed's baseline. Measured in a fresh process per size:
the wall time of what ``run SPACE --dry-run`` does after its imports (load the space, expand and
validate every trial, plan, format the table) and, in a second pass under ``tracemalloc``, the peak
of the Python memory it allocates. ``--profile`` prints the top of a cProfile of one pass instead.

    python benchmarks/expansion.py [--sizes 2000 10000 100000] [--data /tmp/demo] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# trials -> (perturb_epoch range, perturb_lengths, perturb_seeds, random_seeds); x 2 perturbation types
GRIDS = {
    2_000: (50, 2, 2, 5),
    10_000: (50, 5, 2, 10),
    100_000: (100, 5, 10, 10),
}

SPACE = """
from ray import tune
NAME = "expansion_{trials}"
BASE_CONFIG = {base!r}
PARAM_SPACE = {{
    "epochs": {epochs},
    "perturb_type": tune.grid_search(["label_shuffle", "random_target"]),
    "perturb_epoch": tune.grid_search(list(range({starts}))),
    "perturb_length": tune.grid_search(list(range(1, {lengths} + 1))),
    "perturb_seed": tune.grid_search(list(range(42, 42 + {pseeds}))),
    "random_seed": tune.grid_search(list(range(1, {rseeds} + 1))),
}}
"""


def write_space(folder: Path, trials: int, data: Path) -> Path:
    """A grid search space of ``trials`` trials over the demo data in ``data``."""
    starts, lengths, pseeds, rseeds = GRIDS[trials]
    path = folder / f"expansion_{trials}.py"
    path.write_text(
        SPACE.format(
            trials=trials,
            base=str(data / "train.yaml"),
            epochs=starts + lengths,
            starts=starts,
            lengths=lengths,
            pseeds=pseeds,
            rseeds=rseeds,
        )
    )
    return path


def dry_run(path: Path) -> tuple[int, int]:
    """What ``run PATH --dry-run`` does after its imports; (planned trials, printed lines)."""
    from hba_sweep.sweep.dryrun import describe
    from hba_sweep.sweep.expand import expand
    from hba_sweep.sweep.plan import make_plan
    from hba_sweep.sweep.spec import load_search_space

    space = load_search_space(path)
    expansion = expand(space, check_files=True)
    plan = make_plan(expansion.trials, space.fork_from_baseline)
    return plan.total, describe(space, expansion, plan).count("\n") + 1


def measure(path: Path, profile: bool) -> None:
    """Print one JSON-ish line for ``path`` (run in a fresh process), or its profile."""
    import hba_sweep.sweep.runner  # noqa: F401  # the imports `run` pays before expanding, not measured

    if profile:
        profiler = cProfile.Profile()
        profiler.runcall(dry_run, path)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
        return
    start = time.perf_counter()
    total, lines = dry_run(path)
    seconds = time.perf_counter() - start
    tracemalloc.start()
    dry_run(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"{total:>7} trials  {seconds:8.2f} s  peak {peak / 2**20:7.1f} MiB  ({lines} lines printed)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=sorted(GRIDS), choices=sorted(GRIDS))
    parser.add_argument("--data", type=Path, help="demo data folder (default: generated in a temporary folder)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of each size instead")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child process's job
    args = parser.parse_args()
    if args.measure:
        measure(args.measure, args.profile)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = args.data
        if data is None:
            from hba_sweep.training.demo_data import make_demo_data

            data = folder / "demo"
            make_demo_data(data)
        for trials in args.sizes:
            path = write_space(folder, trials, data.resolve())
            extra = ["--profile"] if args.profile else []
            subprocess.run([sys.executable, __file__, "--measure", str(path), *extra], check=True)


if __name__ == "__main__":
    main()
