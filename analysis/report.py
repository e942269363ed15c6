"""``report.md``: the definitions used, what was analysed, per-window deviations from the baseline
(mean ± sd over seeds), the best trial of a searcher study, figures, diverged and skipped trials."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import definitions as d
from analysis import statistics as st
from analysis.groups import describe

HEADLINE = {
    "max_alignment_deviation": "Δ max alignment",
    "min_val_loss_deviation": "Δ min val loss",
    "max_target_rsa_deviation": "Δ max target RSA",
}


TRUNCATION = {
    "min_val_loss": "each run's own epochs up to and including its minimum validation loss (`--truncate "
    "min_val_loss`, as the published notebooks' tables); the baseline is truncated the same way",
    "none": "all of each run's own epochs (`--truncate none`; the published notebooks truncate at the minimum "
    "validation loss)",
    "baseline_only": "the baseline's own epochs up to its minimum validation loss, the perturbed runs' own epochs "
    "all of them (`--truncate baseline_only`, the published heatmaps' rule)",
}


def preface(rule: str) -> list[str]:
    trunc = TRUNCATION[rule]
    return [
        "## Definitions",
        "",
        "- **Own epochs**: the epochs a run trained itself: never epoch -1 (before training), never epochs a "
        "fork inherited from its baseline; a perturbed trial's start at its window (`perturb_epoch`).",
        f"- **Truncation**: {trunc}.",
        "- **Max alignment deviation** = max over the trial's truncated own epochs of the triplet behavioural "
        "RSA − the same max over its baseline's truncated own epochs (same settings and seed). **Min val loss "
        "deviation** likewise with the minimum validation loss. The same for the target RSA and for every "
        "evaluation set/ROI in `summary.parquet` (columns `max_<dataset>/<reference>/<metric>...`).",
        "- **delta** (results.parquet) = value − the baseline's value at the same epoch, same dataset, "
        "reference and metric.",
        "- Neural RSA: model RDM 1 − cosine unless the evaluation set sets `model_rdm_distance_metric`; "
        "behavioural RSA: 1 − Pearson; Spearman between upper triangles. NIGHTS 2AFC on the `test` split, "
        "a distance tie counts as the left image (as published); accuracy as a fraction.",
        "",
    ]


def _fmt(mean: float, sd: float | None = None, digits: int = 4) -> str:
    if pd.isna(mean):
        return "n/a"
    return f"{mean:+.{digits}f}" if sd is None or pd.isna(sd) else f"{mean:+.{digits}f} ± {sd:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def window_section(summary: pd.DataFrame, groups: Sequence[str] = ()) -> list[str]:
    columns = [c for c in HEADLINE if c in summary]
    table = d.window_table(d.completed(summary), columns, [*d.WINDOW, *groups])
    if table.empty:
        return ["No perturbed trial with its baseline in this study: nothing to compare."]
    rows = [
        (
            r["perturb_type"],
            int(r["perturb_epoch"]),
            int(r["perturb_length"]),
            *[r[g] for g in groups],
            int(r["n"]),
            *[_fmt(r[f"{c}_mean"], r[f"{c}_sd"]) for c in columns],
        )
        for _, r in table.iterrows()
    ]
    header = ["perturbation", "start epoch", "length", *groups, "seeds", *[HEADLINE[c] for c in columns]]
    apart = f" and the same {', '.join(groups)}" if groups else ""
    return _table(header, rows) + [
        "",
        f"Mean ± sd over seeds (trials of the same window{apart}); per-trial values and every evaluation set/ROI "
        "in `summary.parquet`.",
    ]


def answer_section(stats: pd.DataFrame, alpha: float, test: str, groups: Sequence[str] = ()) -> list[str]:
    """Per type (and group of settings), one sentence per headline measure, then every measure's significant
    windows."""

    if stats is None or stats.empty:
        return ["No finished perturbed trial with its baseline: nothing to test."]
    lines = [
        f"Per perturbation type and measure: the windows whose deviation from the baseline is significant "
        f"after Benjamini-Hochberg correction over all windows of the study (q ≤ {alpha:g}); with two or more "
        f"seeds the {st.TEST_NAMES[test]}, with one seed the paired stimulus bootstrap where the measure has "
        "bootstrap draws (see docs/statistics.md).",
        "",
    ]
    parts = [((), "", stats)] if not groups else [(k, describe(k, groups), f) for k, f in _by_group(stats, groups)]
    for _, where, part in parts:
        for ptype in sorted(part["perturb_type"].dropna().unique()):
            for measure in [m for m in HEADLINE if m in set(part["measure"])]:
                name = f"{ptype} ({where})" if where else ptype
                lines.append(f"- **{name}, {HEADLINE[measure]}**: {st.answer(part, ptype, measure, alpha)}")
    rows = []
    for (ptype, measure, *values), g in stats.groupby(["perturb_type", "measure", *groups], dropna=False):
        if groups:
            ptype = f"{ptype} ({describe(dict(zip(groups, values, strict=True)), groups)})"
        hits = g[g["significant"]]
        where = (
            ", ".join(
                f"{int(r['perturb_epoch'])}+{int(r['perturb_length'])} ({'↑' if r['mean'] > 0 else '↓'})"
                for _, r in hits.iterrows()
            )
            or "none"
        )
        best = g["q"].min()
        rows.append(
            (ptype, measure, ", ".join(sorted(set(g["test"]))), where, f"{best:.3g}" if pd.notna(best) else "n/a")
        )
    return lines + [
        "",
        *_table(
            ["perturbation", "measure", "test", "significant windows (start+length, direction)", "smallest q"], rows
        ),
    ]


def _by_group(stats: pd.DataFrame, groups: Sequence[str]) -> list[tuple[dict, pd.DataFrame]]:
    """(the group's setting values, its rows) per group of ``stats``."""
    return [(dict(zip(groups, k, strict=True)), f) for k, f in stats.groupby(list(groups), dropna=False)]


def tests_section(stats: pd.DataFrame, groups: Sequence[str] = ()) -> list[str]:
    """Per window (and group of settings), the headline measures' mean, 95% CI, p and q."""
    rows = stats[stats["measure"].isin(list(HEADLINE))] if stats is not None and len(stats) else pd.DataFrame()
    if rows.empty:
        return []
    body = [
        (
            r["perturb_type"],
            int(r["perturb_epoch"]),
            int(r["perturb_length"]),
            *[r[g] for g in groups],
            HEADLINE[r["measure"]],
            int(r["n"]),
            _fmt(r["mean"]),
            "n/a" if pd.isna(r["ci_low"]) else f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]",
            "n/a" if pd.isna(r["p"]) else f"{r['p']:.3g}",
            "n/a" if pd.isna(r["q"]) else f"{r['q']:.3g}",
            r["test"] + (" *" if r["significant"] else ""),
        )
        for _, r in rows.iterrows()
    ]
    return [
        "## Tests per window",
        "",
        *_table(
            [
                "perturbation",
                "start epoch",
                "length",
                *groups,
                "measure",
                "seeds",
                "mean",
                "95% CI",
                "p",
                "q (BH)",
                "test",
            ],
            body,
        ),
        "",
        "`windows.parquet` has every measure (each evaluation set/ROI), both seed tests' p and the q-values; "
        "`summary.parquet` repeats each trial's window CI, p and q per deviation column; `results.parquet` "
        "has the paired bootstrap of every per-epoch change (`delta_ci_low`, `delta_ci_high`, `delta_p`).",
        "",
    ]


def best_trial_lines(best: dict | None, metric: str | None, mode: str | None) -> list[str]:
    if not best:
        return []
    config = ", ".join(f"{k}={v}" for k, v in best["config"].items())
    return [
        "## Best trial",
        "",
        f"Under the study's metric `{metric}` ({mode}): **{best.get('label') or best['trial_id']}** "
        f"(trial id {best['trial_id']}), {metric} = {best['value']:.4f} at epoch {best['epoch']}.",
        "",
        f"Config: {config or '(no searched settings)'}",
        "",
    ]


def write_report(
    info: dict[str, Any],
    summary: pd.DataFrame,
    figures: Sequence[Path],
    notes: Sequence[str],
    stats: pd.DataFrame | None = None,
) -> str:
    """Compose the report text (the caller writes it atomically)."""
    groups = list(info.get("groups") or [])
    lines = [
        f"# Analysis of `{info['root']}`",
        "",
        *preface(info["truncate"]),
        "## What was analysed",
        "",
        f"- trials: {info['n_trials']} ({info['n_baselines']} baselines, "
        f"{info['n_trials'] - info['n_baselines']} perturbed or other)",
        f"- (trial, epoch) checkpoints: {info['n_entries']} ({info['n_inherited']} inherited from baselines), "
        f"{info['n_unique']} distinct checkpoints",
        f"- datasets: {', '.join(info['datasets'])} (evaluation sets from {info['evalsets_source']})",
        f"- RSA similarity {info['score'].rsa_similarity_metric}, stimulus bootstrap draws "
        f"{info['score'].n_boot or 'none (--bootstrap N for CIs of every RSA value)'} (seed {info['score'].seed})",
        f"- this run computed {info['computed']} checkpoint(s); the rest came from `evaluations.parquet`",
        f"- tables: `results.parquet` ({info['n_results']} rows), `training_metrics.parquet` "
        f"({info['n_training']} rows), `summary.parquet` ({len(summary)} perturbed trials)",
        "",
        "## Study identity",
        "",
        *info.get("identity", []),
        "",
        *best_trial_lines(info.get("best"), info.get("metric"), info.get("mode")),
        "## The answer: which windows change alignment",
        "",
        *answer_section(stats, info.get("alpha", 0.05), info.get("test", "t"), groups),
        "",
        "## Perturbation windows vs baseline",
        "",
        *window_section(summary, groups),
        "",
        *tests_section(stats, groups),
        "## Figures",
        "",
    ]
    lines += [f"- [{p.name}]({p.name})" for p in figures]
    if groups:
        lines += [
            "",
            f"The heatmaps are drawn per group ({', '.join(groups)}: one file per group); the change panels, "
            "the vs-loss and single-epoch figures draw each window over all its trials, whatever their "
            f"{', '.join(groups)}; the tables and tests above keep the groups apart.",
        ]
    unfinished = summary.drop(d.completed(summary).index)
    lines += ["", "## Perturbed trials whose window did not complete", ""]
    lines += (
        [
            f"- {r['trial_label']} [{r['trial_id']}]: {r['perturb_type']} window {int(r['perturb_epoch'])}+"
            f"{int(r['perturb_length'])}, last own epoch {r['last_epoch']}; not counted as a finished perturbed "
            "trial"
            for _, r in unfinished.iterrows()
        ]
        if len(unfinished)
        else ["None."]
    )
    duplicates = info.get("duplicates") or []
    lines += ["", "## Duplicate trials", ""]
    lines += [f"- {line}" for line in duplicates] if duplicates else ["None: every trial is distinct."]
    diverged = info.get("diverged") or []
    lines += ["", "## Diverged trials", ""]
    lines += (
        [
            f"- {t}: non-finite loss or predictions on an own epoch; those values are NaN and never count as "
            "a maximum or minimum"
            for t in diverged
        ]
        if diverged
        else ["None."]
    )
    lines += ["", "## Skipped", ""]
    skipped = list(info.get("skipped", [])) + list(notes)
    lines += [f"- {s}" for s in skipped] if skipped else ["Nothing was skipped."]
    return "\n".join(lines) + "\n"
