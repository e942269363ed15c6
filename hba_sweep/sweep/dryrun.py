"""The trial table that ``run --dry-run`` prints (nothing runs)."""

from __future__ import annotations

from ray.tune.search.sample import Domain

from hba_sweep.sweep.expand import Expansion
from hba_sweep.sweep.plan import Plan
from hba_sweep.sweep.spec import SearchSpace

MAX_ROWS = 60


def _varied(values: dict) -> str:
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def _object(value: object, absent: str) -> str:
    """SEARCH_ALG / SCHEDULER as the user wrote it: a class, a factory (called by `run`), or an instance."""
    if value is None:
        return absent
    if isinstance(value, type):
        return value.__name__
    if callable(value) and hasattr(value, "__name__"):
        return f"{value.__name__}()"
    return type(value).__name__


def _domain(value: object) -> str:
    """A PARAM_SPACE entry: a Tune domain as its kind and range (e.g. ``float loguniform (1e-05, 0.003)``)."""
    if isinstance(value, Domain):
        return f"{type(value).__name__.lower()} {str(value.get_sampler()).lower()} {value.domain_str}"
    return repr(value)


def _searcher_lines(space: SearchSpace, expansion: Expansion) -> list[str]:
    lines = [
        f"search algorithm: {_object(space.search_alg, 'none')}; "
        f"scheduler: {_object(space.scheduler, 'none (FIFO)')}; metric: {space.metric} ({space.mode})",
        f"{space.num_samples} trials will be sampled from:",
    ]
    lines += [f"  {k}: {_domain(v)}" for k, v in space.param_space.items()]
    lines.append(f"validated the base config and {len(expansion.trials)} samples of the space:")
    lines += [f"  {_varied(t.varied)}" for t in expansion.trials]
    return lines


def _grid_lines(plan: Plan) -> list[str]:
    rows = [("baselines", t.name, "scratch", t.varied) for t in plan.baselines]
    rows += [
        (
            "perturbed",
            f.trial.name,
            f"fork of baseline after epoch {f.init_epoch}" if f.init_epoch is not None else "scratch",
            f.trial.varied,
        )
        for f in plan.forks
    ]
    rows += [("trials", t.name, "scratch", t.varied) for t in plan.independent]
    lines = [f"{'phase':<10} {'start':<32} trial"]
    for phase, name, start, _varied in rows[:MAX_ROWS]:
        lines.append(f"{phase:<10} {start:<32} {name}")
    if len(rows) > MAX_ROWS:
        lines.append(f"... {len(rows) - MAX_ROWS} more")
    return lines


def describe(space: SearchSpace, expansion: Expansion, plan: Plan | None) -> str:
    """The dry-run report: trial table, counts, resources and any missing data files."""
    lines = [f"search space: {space.path} (experiment {space.name!r})", f"base config: {space.base_source}"]
    if expansion.sampled or plan is None:
        lines += _searcher_lines(space, expansion)
        count = space.num_samples
    else:
        lines += _grid_lines(plan)
        count = plan.total
        if plan.independent:
            lines.append(f"{count} trials (FORK_FROM_BASELINE is False: every trial trains from scratch)")
        else:
            lines.append(
                f"{count} trials: {len(plan.baselines)} baselines + {len(plan.forks)} perturbed "
                f"({sum(f.init_epoch is not None for f in plan.forks)} forked from their baseline)"
            )
    lines.append(f"per-trial resources: {space.resources}; max failures per trial: {space.max_failures}")
    if space.missing_base is not None:
        lines.append(f"note: {space.missing_base} does not exist yet; `run` creates it first (PREPARE).")
    if expansion.missing_files:
        will = "`run` creates them first (PREPARE)" if space.prepare else "`run` would refuse to start"
        lines.append(f"missing data files ({will}):")
        lines += [f"  {m}" for m in expansion.missing_files]
        if not space.prepare:
            lines.append(f"Fix: edit the data paths in {space.base_source} (see data/README.md).")
    lines.append("dry run: nothing was started.")
    return "\n".join(lines)
