"""The single-epoch effects figure: one comparison per measure family.

Each panel is one family (behaviour, validation loss, each neural set, NIGHTS, CKA); per perturbed
epoch and type a dot is the mean over seeds of (trial - baseline at the perturbed epoch), the bar its
95% t interval over seeds (none with one seed); within a family the measures (ROIs) are told apart
by marker. Near-duplicates are dropped: the training-logged alignment when the evaluation's THINGS
behavioural RSA (the same quantity) is there, and biased CKA next to the unbiased one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.plotting import Figure, plt
from analysis.window_figures import NoData, label_of, mean_and_interval

MARKERS = "osD^v<>P*X"


def family_of(measure: str) -> str:
    """The family a measure belongs to (one panel each)."""
    if measure in ("alignment", "target_rsa") or measure.startswith("things/"):
        return "behavioural alignment"
    if measure == "val_loss":
        return "validation loss"
    dataset = measure.split("/")[0]
    return {
        "things_fmri": "neural: THINGS-fMRI",
        "nod": "neural: NOD",
        "nights": "NIGHTS 2AFC",
        "cka": "CKA with the targets",
    }.get(dataset, dataset)


def drop_duplicates(measures: list[str]) -> list[str]:
    """Without the measures that repeat another (module doc)."""
    out = list(measures)
    if "alignment" in out and any(m.startswith("things/behavior/") for m in out):
        out.remove("alignment")
    if "cka/targets/cka" in out and "cka/targets/cka_unbiased" in out:
        out.remove("cka/targets/cka")
    return out


def single_epoch_figure(effects: pd.DataFrame) -> Figure:
    """One panel per family: Δ at the perturbed epoch (x) per type (colour) and measure (marker)."""

    effects = effects.dropna(subset=["delta"]) if len(effects) else effects
    if effects.empty:
        raise NoData("no single-epoch perturbed trials with a baseline in this study")
    measures = drop_duplicates(list(dict.fromkeys(effects["measure"])))
    families: dict[str, list[str]] = {}
    for m in measures:
        families.setdefault(family_of(m), []).append(m)
    types = sorted(effects["perturb_type"].unique())
    epochs = sorted(effects["perturb_epoch"].unique())
    cols = min(3, len(families))
    nrows = -(-len(families) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols + 1.5, 3.4 * nrows), squeeze=False, layout="constrained")
    for ax, (family, members) in zip(axes.flat, families.items(), strict=False):
        slots = [(t, m) for t in types for m in members]
        width = 0.7 / max(1, len(slots))
        for k, (ptype, measure) in enumerate(slots):
            rows = effects[(effects["measure"] == measure) & (effects["perturb_type"] == ptype)]
            stats = [(e, *mean_and_interval(g["delta"].tolist())) for e, g in rows.groupby("perturb_epoch")]
            if not stats:
                continue
            e, mean, low, high = (np.array(v, dtype=float) for v in zip(*stats, strict=False))
            x = np.searchsorted(epochs, e) + (k - (len(slots) - 1) / 2) * width
            err = np.where(np.isfinite(low), np.vstack([mean - low, high - mean]), 0.0)
            ax.errorbar(
                x,
                mean,
                yerr=err,
                fmt=MARKERS[members.index(measure) % len(MARKERS)],
                ms=6,
                color=f"C{types.index(ptype) + 1}",
                capsize=3,
                lw=1.2,
                ls="none",
            )
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(range(len(epochs)), [str(int(e)) for e in epochs])
        ax.set_xlabel("perturbed epoch")
        ax.set_ylabel("trial - baseline")
        ax.set_title(family, fontsize=10)
        ax.grid(alpha=0.3, axis="y")
        if len(members) > 1:
            ax.legend(
                handles=[
                    plt.Line2D(
                        [],
                        [],
                        color="gray",
                        marker=MARKERS[i % len(MARKERS)],
                        ls="none",
                        label=label_of(m).split(" · ", 1)[-1],
                    )
                    for i, m in enumerate(members)
                ],
                fontsize=7,
                loc="best",
                title="measure",
                title_fontsize=7,
            )
        elif members:
            ax.set_title(f"{family}\n{label_of(members[0])}", fontsize=9)
    for ax in list(axes.flat)[len(families) :]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=f"C{i + 1}", marker="o", ls="none", label=t) for i, t in enumerate(types)]
    fig.legend(handles=handles, title="perturbation", loc="outside right upper", fontsize=8)
    fig.suptitle(
        "Single-epoch perturbations: trial - baseline at the perturbed epoch (dot: mean over seeds; bar: 95% "
        "t interval, none with one seed; 0 line: no change)",
        fontsize=10,
    )
    return fig
