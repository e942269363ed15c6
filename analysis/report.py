"""``report.md``: what was analysed, headline numbers per perturbation type, figures, what was skipped."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from analysis.figures import deviations, per_epoch


def _fmt(mean: float, std: float | None = None) -> str:
    if pd.isna(mean):
        return "n/a"
    return f"{mean:+.4f}" if std is None or pd.isna(std) else f"{mean:+.4f} ± {std:.4f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def baseline_section(results: pd.DataFrame) -> list[str]:
    base = results[results["perturb_type"] == "none"]
    if base.empty:
        return ["No baseline trials."]
    last = base[base["epoch"] == base.groupby("trial_id")["epoch"].transform("max")]
    stats = last.groupby(["dataset", "reference", "metric"])["value"].agg(["mean", "std", "count"]).reset_index()
    rows = [(r["dataset"], r["reference"], r["metric"], f"{r['mean']:.4f}",
             "" if pd.isna(r["std"]) else f"{r['std']:.4f}", int(r["count"])) for _, r in stats.iterrows()]
    return _table(["dataset", "reference", "metric", "mean", "sd over seeds", "baselines"], rows)


def perturbation_section(results: pd.DataFrame, training: pd.DataFrame) -> list[str]:
    frame = per_epoch(results, training)
    dev = deviations(frame) if len(frame) else pd.DataFrame()
    if dev.empty:
        return ["No perturbed trial with its baseline in this study: nothing to compare."]
    rows = []
    for ptype, g in dev.groupby("perturb_type"):
        rows.append((ptype, len(g), _fmt(g["delta_behavioral"].mean(), g["delta_behavioral"].std()),
                     _fmt(g["delta_val_loss"].mean(), g["delta_val_loss"].std()),
                     _fmt(g["delta_neural"].mean(), g["delta_neural"].std()),
                     _fmt(g["max_alignment_dev"].mean()), _fmt(g["min_loss_dev"].mean())))
    header = ["perturbation", "trials", "Δ behavioural RSA (last epoch)", "Δ val loss (last epoch)",
              "Δ neural RSA (last epoch)", "Δ max behavioural RSA", "Δ min val loss"]
    return _table(header, rows) + ["", "Δ = trial − its baseline (same settings and seed, same epoch); "
                                       "mean ± sd over trials."]


def write_report(path: Path, info: dict[str, Any], results: pd.DataFrame, training: pd.DataFrame,
                 figures: Sequence[Path], notes: Sequence[str]) -> str:
    """Compose the report text (the caller writes it atomically)."""
    lines = [f"# Analysis of `{info['root']}`", "",
             "## What was analysed", "",
             f"- trials: {info['n_trials']} ({info['n_baselines']} baselines, {info['n_trials'] - info['n_baselines']} "
             "perturbed or other)",
             f"- (trial, epoch) checkpoints: {info['n_entries']} ({info['n_inherited']} inherited from baselines), "
             f"{info['n_unique']} distinct checkpoints",
             f"- datasets: {', '.join(info['datasets'])} (evaluation sets from {info['evalsets_source']})",
             f"- RSA: model RDM {info['score'].model_rdm_distance_metric}, similarity "
             f"{info['score'].rsa_similarity_metric}, bootstrap draws {info['score'].n_boot or 'none'}",
             f"- this run computed {info['computed']} checkpoint(s); the rest came from `evaluations.parquet`",
             f"- tables: `results.parquet` ({len(results)} rows), `training_metrics.parquet` ({len(training)} rows)",
             "", "## Baselines at their last epoch", "", *baseline_section(results),
             "", "## Perturbations vs baseline", "", *perturbation_section(results, training),
             "", "## Figures", ""]
    lines += [f"- [{p.name}]({p.name})" for p in figures]
    lines += ["", "## Skipped", ""]
    skipped = list(info.get("skipped", [])) + list(notes)
    lines += [f"- {s}" for s in skipped] if skipped else ["Nothing was skipped."]
    return "\n".join(lines) + "\n"
