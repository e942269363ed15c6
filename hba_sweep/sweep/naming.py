"""Trial names and duplicate trials of an expansion, both in time linear in the number of trials.

A trial is named like the study's runs (``config.run_name``), followed by the other settings that
differ between the trials (``_lr0.001``), then, for distinct trials whose names still clash, a
counter (``_s1``). Two trials whose configs resolve equal are the same trial: :func:`duplicates`
finds them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from hba_sweep.config import DEFAULTS, TrainConfig, run_name
from hba_sweep.config.train_config import PERTURB_FIELDS

if TYPE_CHECKING:  # expand defines Trial and imports this module
    from hba_sweep.sweep.expand import Trial

# Settings that name a run in the study (config.run_name); other varied settings are appended.
NAMED_FIELDS = {
    "backbone",
    "rank",
    "vision_layers",
    "transformer_layers",
    "random_seed",
    "perturb_type",
    "perturb_epoch",
    "perturb_length",
    "perturb_seed",
    "perturb_fraction",
    "run_name",
}
UNNAMED = ("init_from", "init_epoch", "save_path")  # differ without making another trial's name


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value).replace("/", "-")


def differing_settings(configs: Iterable[dict[str, Any]]) -> list[str]:
    """The settings whose value is not the same in every config (a missing key counts as None), sorted."""
    first: dict[str, Any] | None = None
    same: list[str] = []  # the keys still equal in every config so far, and first's values of them
    expected: list[Any] = []
    differ: set[str] = set()
    for config in configs:
        if first is None:
            first, same, expected = config, list(config), list(config.values())
        for key in config.keys() - first.keys() - differ:  # in this config only: differs from first's None
            if config[key] is not None:
                differ.add(key)
        if [config.get(key) for key in same] != expected:
            differ.update(key for key in same if config.get(key) != first[key])
            same = [key for key in same if key not in differ]
            expected = [first[key] for key in same]
    return sorted(differ)


def name_trials(trials: list[Trial]) -> None:
    """Name each trial like the study's runs; append varied unnamed settings, then a counter, if needed."""
    extra = [k for k in differing_settings(t.config for t in trials) if k not in NAMED_FIELDS and k not in UNNAMED]
    seen: dict[str, int] = {}
    for trial in trials:
        name = run_name(TrainConfig(**trial.config))
        name += "".join(f"_{k}{_fmt(trial.config[k])}" for k in extra)
        count = seen.get(name, 0)
        seen[name] = count + 1
        trial.name = name if count == 0 else f"{name}_s{count}"


def baseline_config(config: dict[str, Any]) -> dict[str, Any]:
    """The trial's settings with the perturbation switched off (canonical perturbation fields)."""
    return {**config, **{k: getattr(DEFAULTS, k) for k in PERTURB_FIELDS}, "perturb_type": "none"}


def duplicates(configs: Sequence[dict[str, Any]], baselines_shared: bool) -> list[list[int]]:
    """Groups (indices, in order) of configs that are the same trial; empty when all are distinct.

    Equal configs are the same trial. A ``perturb_type: none`` trial ignores its perturbation settings:
    with ``baselines_shared`` such trials that differ only there become one shared baseline (one per
    group of equal settings, plan.make_plan), so only equal ones count; otherwise they are the same
    trial. Only a hash is kept per config; configs of equal hash are compared in full.
    """

    def identity(config: dict[str, Any]) -> dict[str, Any]:
        return config if baselines_shared or config["perturb_type"] != "none" else baseline_config(config)

    by_hash: dict[int, list[int]] = {}
    groups: dict[int, list[int]] = {}
    for index, config in enumerate(configs):
        this = identity(config)
        seen = by_hash.setdefault(hash(tuple(sorted(this.items()))), [])
        original = next((i for i in seen if identity(configs[i]) == this), None)
        if original is None:
            seen.append(index)
        else:
            groups.setdefault(original, [original]).append(index)
    return list(groups.values())
