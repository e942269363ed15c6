"""A study's best trial under the metric/mode its manifest names (searched studies): the row for
the report and the one line ``run`` and ``status`` print. Imports no matplotlib."""

from __future__ import annotations

import pandas as pd

from analysis import definitions, gather, tables
from analysis.records import Study


def best_trial(study: Study, training: pd.DataFrame) -> tuple[dict | None, str | None, str | None]:
    """The best trial under the manifest's metric/mode (with its label and searched settings)."""
    manifest = study.manifest or {}
    metric, mode = manifest.get("metric"), manifest.get("mode")
    if not metric or not mode:
        return None, metric, mode
    keys = tables.searched_keys(study)
    configs = {t.trial_id: {k: t.config.get(k) for k in keys} for t in study.trials.values()}
    best = definitions.best_trial(training, metric, mode, configs)
    if best:
        best["label"] = study.trials[best["trial_id"]].label
    return best, metric, mode


def best_trial_summary(experiment: str, storage: str | None = None) -> str | None:
    """One line naming a study's best trial and its searched config under the study's metric/mode
    (for ``run`` and ``status`` to print); None when the study names no metric or nothing logged it."""
    fs, root = gather.open_experiment(experiment, storage)
    study = gather.gather(fs, root)
    best, metric, mode = best_trial(study, tables.training_table(study))
    if not best:
        return None
    config = ", ".join(f"{k}={v}" for k, v in best["config"].items())
    return (
        f"best trial ({metric}, {mode}): {best['label']} [{best['trial_id']}] {metric}={best['value']:.4f} "
        f"at epoch {best['epoch']}" + (f"; {config}" if config else "")
    )
