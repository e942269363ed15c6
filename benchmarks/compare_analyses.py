"""Compare two studies' analysis tables (and per-trial metrics.csv) number by number.

The parity check of a behaviour-preserving change: run the demo study and its analysis before
and after the change, collect each, compare.

    # before the change (a checkout of the old commit on PYTHONPATH, cwd that checkout):
    python -m hba_sweep run search_spaces/demo.py
    python -m hba_sweep analyze ray_results/demo
    python benchmarks/compare_analyses.py --collect ray_results/demo /tmp/parity/base
    # after the change: the same three commands, collecting into /tmp/parity/new, then
    python benchmarks/compare_analyses.py /tmp/parity/base /tmp/parity/new [--atol 1e-6]

`--collect STUDY_DIR OUT_DIR` copies every parquet under STUDY_DIR/analysis/ (the prefix cache
excluded) to OUT_DIR/analysis/ and each trial's metrics.csv to OUT_DIR/metrics/<run name>.csv
(the run name is the trial's folder directly under STUDY_DIR).

`DIR_A DIR_B` compares every *.parquet and *.csv present in both (by relative path) and lists the
ones present in only one. Rows are matched by their identifying columns (trial label, epoch,
dataset, reference, metric, ...), never by Tune's random trial ids, content hashes, absolute paths,
timings or timestamps: such columns are detected, ignored and named in the output. A table keyed
only by a hash (evaluations.parquet's checkpoint_key) gets that hash translated into the trial
labels and epochs a sibling table (results.parquet) gives it, and a Tune trial id (baseline_id)
is named by its trial_label, so a fork's baseline pairing is still compared. Numeric columns agree to
--atol (NaN equals NaN), other columns exactly. Exit 0 when everything agrees, 1 on any difference
or missing file, 2 on a usage error. `--allow-added` lets B add tables, columns and rows (a newer
analysis that reports more) while every value A has must still agree.

Pure pandas/pyarrow/numpy: it imports nothing of hba_sweep, so it works across code layouts.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

# Columns that identify a row, most specific first; others are added only if these are not unique.
KEY_PRIORITY = ["trial_label", "run_name", "run", "label", "name", "epoch", "dataset", "reference", "metric"]
# Column names that are volatile by nature, each with the reason printed when it is ignored.
VOLATILE_NAMES = {
    "random id or content hash (by name)": re.compile(r"(^|_)(id|ids|uuid|key|hash|sha256|pid)$"),
    "path or machine (by name)": re.compile(r"(^|_)(path|dir|file|uri|logdir|host|hostname|node_ip)$"),
    "wall-clock timing (by name)": re.compile(r"(^|_)(date|time|timestamp|duration)$|_at$|seconds|per_second"),
}
HEX_ID = re.compile(r"^[0-9a-f]{8,64}(_[0-9]{5})?$")
PATH_LIKE = re.compile(r"^(/|~|[A-Za-z]:\\|[a-z0-9+]+://)")
LABEL_COLUMNS = ["trial_label", "epoch"]


@dataclass
class Verdict:
    name: str
    ok: bool = True
    lines: list[str] = field(default_factory=list)

    def fail(self, line: str) -> None:
        self.ok = False
        self.lines.append(line)


# ---- collect -------------------------------------------------------------------------------
def collect(study: Path, out: Path) -> int:
    """Copy STUDY/analysis/**.parquet and each trial's metrics.csv (keyed by run name) to OUT."""
    analysis = study / "analysis"
    parquets = sorted(p for p in analysis.rglob("*.parquet") if "prefix_cache" not in p.parts)
    if not parquets:
        print(
            f"--collect: no parquet under {analysis}. Fix: run `python -m hba_sweep analyze {study}` first.",
            file=sys.stderr,
        )
        return 2
    for src in parquets:
        dst = out / "analysis" / src.relative_to(analysis)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    metrics = sorted(p for p in study.rglob("metrics.csv") if analysis not in p.parents)
    seen: dict[str, Path] = {}
    for src in metrics:
        run = src.relative_to(study).parts[0]
        if run in seen:
            print(
                f"--collect: two metrics.csv for run {run!r}: {seen[run]} and {src}. "
                "Fix: collect a study whose trial folders hold one metrics.csv each.",
                file=sys.stderr,
            )
            return 2
        seen[run] = src
        dst = out / "metrics" / f"{run}.csv"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    print(f"collected {len(parquets)} parquet(s) and {len(metrics)} metrics.csv from {study} into {out}")
    for p in parquets:
        print(f"  analysis/{p.relative_to(analysis)}")
    return 0


# ---- column classes ------------------------------------------------------------------------
def volatile_columns(frame: pd.DataFrame) -> dict[str, str]:
    """Columns that differ between identical runs: {name: why}."""
    out: dict[str, str] = {}
    for col in frame.columns:
        series = frame[col]
        if pd.api.types.is_datetime64_any_dtype(series):
            out[col] = "timestamp"
            continue
        why = next((w for w, rx in VOLATILE_NAMES.items() if rx.search(str(col))), None)
        if why and not pd.api.types.is_bool_dtype(series):
            out[col] = why
            continue
        values = series.dropna()
        if len(values) and (series.dtype == object or pd.api.types.is_string_dtype(series)):
            text = values.astype(str)
            if text.str.fullmatch(HEX_ID).all():
                out[col] = "random id or content hash (hex values)"
            elif text.str.match(PATH_LIKE).all():
                out[col] = "absolute path or URI (values)"
    return out


def as_numeric(series: pd.Series) -> pd.Series | None:
    """The column as float64 when it is numeric (or all-null objects), else None."""
    if pd.api.types.is_bool_dtype(series):
        return None
    if pd.api.types.is_numeric_dtype(series):
        return pd.Series(series.to_numpy(dtype=float, na_value=np.nan), index=series.index)
    if series.dtype == object and series.map(lambda v: v is None or isinstance(v, (int, float))).all():
        return pd.to_numeric(series, errors="coerce").astype(float)
    return None


def trial_names(frames: dict[str, pd.DataFrame]) -> pd.Series:
    """Tune's trial id -> trial_label, from every table that holds both."""
    pairs = [f[["trial_id", "trial_label"]] for f in frames.values() if {"trial_id", "trial_label"} <= set(f.columns)]
    if not pairs:
        return pd.Series(dtype=object)
    return pd.concat(pairs).dropna().drop_duplicates("trial_id").set_index("trial_id")["trial_label"]


def translate_ids(
    frame: pd.DataFrame, siblings: dict[str, pd.DataFrame], names: pd.Series
) -> tuple[pd.DataFrame, list[str]]:
    """Add a stable `<col>->label` beside each volatile id column that can be named:
    a Tune trial id (trial_id, baseline_id) by its trial_label; in a table without trial_label,
    a content hash (checkpoint_key) by the trial_label@epoch set a sibling table maps it to one-to-one."""
    notes: list[str] = []
    for col, why in volatile_columns(frame).items():
        if not why.startswith("random id"):
            continue
        values = frame[col].dropna()
        if len(values) and values.isin(names.index).all():
            if col != "trial_id" or "trial_label" not in frame.columns:
                frame = frame.assign(**{f"{col}->label": frame[col].map(names)})
                notes.append(f"{col} named by its trial_label")
            continue
        if "trial_label" in frame.columns:
            continue
        for sib_name, sib in siblings.items():
            if col not in sib.columns or not all(c in sib.columns for c in LABEL_COLUMNS):
                continue
            labels = sib[LABEL_COLUMNS].astype(str).agg("@".join, axis=1)
            mapping = labels.groupby(sib[col]).agg(lambda s: "|".join(sorted(set(s))))
            if mapping.duplicated().any() or not values.isin(mapping.index).all():
                continue  # not one-to-one (e.g. an evaluation-settings key), or ids the sibling lacks
            frame = frame.assign(**{f"{col}->label": frame[col].map(mapping)})
            notes.append(f"{col} named by the trial_label@epoch set {sib_name} gives it")
            break
    return frame, notes


def key_columns(frame: pd.DataFrame, volatile: dict[str, str]) -> list[str] | None:
    """The smallest prioritised set of stable non-float columns that identifies each row."""
    stable = [c for c in frame.columns if c not in volatile and not pd.api.types.is_float_dtype(frame[c])]
    translated = [c for c in stable if c.endswith("->label")]
    ordered = [c for c in KEY_PRIORITY if c in stable] + translated + [c for c in stable if c not in KEY_PRIORITY]
    keys: list[str] = []
    for col in dict.fromkeys(ordered):
        keys.append(col)
        if not frame.duplicated(keys).any():
            return keys
    return None


# ---- compare -------------------------------------------------------------------------------
def read_table(path: Path) -> pd.DataFrame:
    """A collected table: parquet, or a per-trial metrics.csv."""
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def compare_tables(
    name: str,
    a: pd.DataFrame,
    b: pd.DataFrame,
    atol: float,
    frames_a: dict[str, pd.DataFrame],
    frames_b: dict[str, pd.DataFrame],
    allow_added: bool = False,
) -> Verdict:
    """One table of A against B: its rows matched by stable keys, numbers to atol, the rest exactly
    (``allow_added``: columns and rows only B has are listed, not failed)."""
    verdict = Verdict(name)
    added = verdict.lines.append if allow_added else verdict.fail
    siblings = [
        {n: f for n, f in frames.items() if n != name and n.endswith(".parquet")} for frames in (frames_a, frames_b)
    ]
    a, notes_a = translate_ids(a, siblings[0], trial_names(frames_a))
    b, notes_b = translate_ids(b, siblings[1], trial_names(frames_b))
    verdict.lines += [f"  {n}" for n in dict.fromkeys(notes_a + notes_b)]
    only_a, only_b = sorted(set(a.columns) - set(b.columns)), sorted(set(b.columns) - set(a.columns))
    if only_a:
        verdict.fail(f"  columns only in A: {only_a}")
    if only_b:
        added(f"  columns only in B: {only_b}")
    volatile = {**volatile_columns(a), **volatile_columns(b)}
    if volatile:
        verdict.lines.append("  ignored: " + ", ".join(f"{c} ({why})" for c, why in volatile.items()))
    if len(a) != len(b):
        (added if len(a) < len(b) else verdict.fail)(f"  rows: {len(a)} in A, {len(b)} in B")
    common = [c for c in a.columns if c in b.columns and c not in volatile]
    keys = key_columns(a[common], volatile)
    if keys is None or b.duplicated(keys).any():
        keys = []
        verdict.lines.append("  no identifying columns: rows matched in sorted order")
        a = a.sort_values(common, ignore_index=True, na_position="last")
        b = b.sort_values(common, ignore_index=True, na_position="last")
    else:
        verdict.lines.append(f"  rows matched by: {keys}")
        ka = a[keys].astype(str).agg("\x1f".join, axis=1)
        kb = b[keys].astype(str).agg("\x1f".join, axis=1)
        missing_b, missing_a = ka[~ka.isin(kb)], kb[~kb.isin(ka)]
        for label, miss, report in (("only in A", missing_b, verdict.fail), ("only in B", missing_a, added)):
            if len(miss):
                shown = [tuple(k.split("\x1f")) for k in miss.head(3)]
                report(f"  {len(miss)} row(s) {label}, e.g. {shown}")
        a = a.assign(_k=ka).set_index("_k")
        b = b.assign(_k=kb).set_index("_k")
        shared = a.index.intersection(b.index)
        a, b = a.loc[shared], b.loc[shared]
    n = min(len(a), len(b))
    a, b = a.iloc[:n], b.iloc[:n]
    for col in common:
        if col in keys:
            continue
        xa, xb = as_numeric(a[col]), as_numeric(b[col])
        if xa is not None and xb is not None:
            va, vb = xa.to_numpy(), xb.to_numpy()
            nan_mismatch = int((np.isnan(va) != np.isnan(vb)).sum())
            both = ~np.isnan(va) & ~np.isnan(vb)
            diff = float(np.max(np.abs(va[both] - vb[both]), initial=0.0))
            bad = int((np.abs(va[both] - vb[both]) > atol).sum()) + nan_mismatch
            line = f"  {col}: max |diff| {diff:.3g}" + (f", {nan_mismatch} NaN mismatch(es)" if nan_mismatch else "")
            if bad:
                verdict.fail(line + f"  DIFFERS in {bad} row(s)")
            elif diff > 0:
                verdict.lines.append(line)
        else:
            sa, sb = a[col].astype(object).to_numpy(), b[col].astype(object).to_numpy()
            same = np.array(
                [
                    bool(pd.isna(x) and pd.isna(y)) or (not pd.isna(x) and not pd.isna(y) and x == y)
                    for x, y in zip(sa, sb, strict=True)
                ],
                dtype=bool,
            )
            if not same.all():
                i = int(np.argmin(same))
                verdict.fail(f"  {col}: {int((~same).sum())} row(s) differ, e.g. {sa[i]!r} vs {sb[i]!r}")
    return verdict


def tables(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.suffix in (".parquet", ".csv")}


def compare_dirs(dir_a: Path, dir_b: Path, atol: float, allow_added: bool = False) -> int:
    """Print a verdict per table; 0 when all agree, 1 on a difference or a missing table, 2 on bad input
    (``allow_added``: tables, columns and rows only B has do not count as differences)."""
    for folder in (dir_a, dir_b):
        if not folder.is_dir():
            print(f"{folder}: not a folder. Fix: give two folders written by --collect.", file=sys.stderr)
            return 2
    ta, tb = tables(dir_a), tables(dir_b)
    if not ta and not tb:
        print(f"nothing to compare: no *.parquet or *.csv under {dir_a} or {dir_b}", file=sys.stderr)
        return 2
    ok = True
    for name in sorted(set(ta) ^ set(tb)):
        ok = ok and allow_added and name in tb
        print(f"{'ADDED' if name in tb and allow_added else 'MISSING'} {name}: only in {'A' if name in ta else 'B'}")
    both = sorted(set(ta) & set(tb))
    frames_a = {n: read_table(ta[n]) for n in both}
    frames_b = {n: read_table(tb[n]) for n in both}
    for name in both:
        verdict = compare_tables(name, frames_a[name], frames_b[name], atol, frames_a, frames_b, allow_added)
        ok &= verdict.ok
        if verdict.ok and name.endswith(".csv"):
            continue  # per-trial CSVs: print only the ones that differ
        print(f"{'SAME' if verdict.ok else 'DIFFERENT'} {name} ({len(frames_a[name])} rows)")
        for line in verdict.lines:
            print(line)
    csvs = [n for n in both if n.endswith(".csv")]
    print(
        f"{len(both)} table(s) compared ({len(both) - len(csvs)} parquet, {len(csvs)} csv) at atol {atol:g}: "
        + ("all the same" if ok else "DIFFERENCES found")
    )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="*", metavar="DIR", help="DIR_A DIR_B to compare")
    parser.add_argument("--atol", type=float, default=1e-6, help="absolute tolerance for numbers (default 1e-6)")
    parser.add_argument(
        "--allow-added",
        action="store_true",
        help="B may add tables, columns and rows (a newer analysis); every value A has must still agree",
    )
    parser.add_argument(
        "--collect",
        nargs=2,
        metavar=("STUDY_DIR", "OUT_DIR"),
        help="copy a study's analysis parquets and per-trial metrics.csv into OUT_DIR",
    )
    args = parser.parse_args(argv)
    if args.collect:
        return collect(Path(args.collect[0]), Path(args.collect[1]))
    if len(args.dirs) != 2:
        parser.error("give DIR_A DIR_B, or --collect STUDY_DIR OUT_DIR")
    return compare_dirs(Path(args.dirs[0]), Path(args.dirs[1]), args.atol, args.allow_added)


if __name__ == "__main__":
    sys.exit(main())
