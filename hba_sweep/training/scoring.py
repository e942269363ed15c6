"""Evaluation sets and their scorers: the images to run and how predictions become result rows.

An :class:`EvalSet` pairs an image list with a scorer turning 66-d predictions into tidy rows
``reference, metric, value, p_value, ci_low, ci_high``: behavioural RSA (THINGS 48), neural RSA
(THINGS-fMRI averaged per concept, NOD), NIGHTS 2AFC and CKA against targets. ``build_evalset``
makes one from an ``evalsets.yaml`` entry; :class:`ScoreSettings` says how predictions are compared
with references (published defaults: :data:`MODEL_RDM_DEFAULTS`, NIGHTS ``test`` split).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binomtest

from hba_sweep import rsa
from hba_sweep.data.evalsets import load_nights, load_nod, load_things_fmri
from hba_sweep.data.rdm_io import load_reference
from hba_sweep.data.things import check_files_exist, read_things_csv
from hba_sweep.foundation.choices import DATASETS, NIGHTS_DEFAULT_SPLIT
from hba_sweep.foundation.errors import DataError

Row = dict[str, Any]
Scorer = Callable[[np.ndarray], list[Row]]


@dataclass
class EvalSet:
    """Images to run through the model and how to score the predictions."""

    dataset: str
    paths: list[Path]
    score: Scorer
    settings: dict[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        """Identifies the evaluation: dataset, its settings and the image files (size, mtime)."""
        digest = hashlib.sha256(
            json.dumps({"dataset": self.dataset, **self.settings}, sort_keys=True, default=str).encode()
        )
        for path in self.paths:
            st = os.stat(path)
            digest.update(f"|{path}:{st.st_size}:{st.st_mtime_ns}".encode())
        return digest.hexdigest()[:16]


def result_row(
    reference: str, metric: str, value: float, p_value: float = math.nan, ci: tuple[float, float] = (math.nan, math.nan)
) -> Row:
    return {
        "reference": reference,
        "metric": metric,
        "value": float(value),
        "p_value": float(p_value),
        "ci_low": float(ci[0]),
        "ci_high": float(ci[1]),
    }


def rsa_scorer(
    references: Mapping[str, np.ndarray],
    distance: str,
    similarity: str,
    n_boot: int = 0,
    seed: int = 0,
    groups: Sequence[Any] | None = None,
) -> Scorer:
    """RSA of the model RDM (predictions averaged per group first, if given) with each reference."""

    def score(predictions: np.ndarray) -> list[Row]:
        x = predictions if groups is None else rsa.average_by_group(predictions, groups)[1]
        rows = []
        for name, ref in references.items():
            rho, p = rsa.behavioral_rsa(x, ref, distance, similarity)
            ci = (
                rsa.bootstrap_rsa_ci(x, ref, distance, similarity, n_boot=n_boot, seed=seed)
                if n_boot
                else (math.nan, math.nan)
            )
            rows.append(result_row(name, f"rsa_{similarity}", rho, p, ci))
        return rows

    return score


def cka_scorer(targets: np.ndarray) -> Scorer:
    """Linear CKA (biased and unbiased HSIC) between predictions and the 66-d targets."""

    def score(predictions: np.ndarray) -> list[Row]:
        return [
            result_row("targets", "cka", rsa.compute_cka(predictions, targets)),
            result_row("targets", "cka_unbiased", rsa.compute_cka(predictions, targets, unbiased=True)),
        ]

    return score


def two_afc_scorer(nights: Any, split: str | None) -> Scorer:
    """NIGHTS 2AFC accuracy; p-value of a two-sided binomial test against chance (0.5)."""
    left_vote = (nights.human_choice == 0).astype(float)
    right_vote = 1.0 - left_vote

    def score(predictions: np.ndarray) -> list[Row]:
        acc = rsa.two_afc_accuracy(
            predictions[nights.ref_idx],
            predictions[nights.left_idx],
            predictions[nights.right_idx],
            left_vote,
            right_vote,
        )
        n = len(nights)
        p = binomtest(int(round(acc * n)), n, 0.5).pvalue
        return [result_row(split or "all", "2afc_accuracy", acc, p)]

    return score


def load_references(paths: Mapping[str, str], n: int, distance: str = "pearson") -> dict[str, np.ndarray]:
    """Reference RDMs by name; a file holding response patterns (n x d, not square) becomes an RDM."""
    return {name: load_reference(path, n, distance) for name, path in paths.items()}


@dataclass(frozen=True)
class ScoreSettings:
    """How predictions are compared with references.

    ``model_rdm_distance_metric`` None: each evaluation set's own ``model_rdm_distance_metric``,
    else the published default for its dataset (:data:`MODEL_RDM_DEFAULTS`).
    """

    model_rdm_distance_metric: str | None = None
    rsa_similarity_metric: str = "spearman"
    reference_rdm_distance_metric: str = "pearson"
    n_boot: int = 0
    seed: int = 0


RSA_DATASETS = ("things", "things_fmri", "nod")
# Published model RDMs: behaviour 1 - Pearson (as in training), brains 1 - cosine.
MODEL_RDM_DEFAULTS = {"things": "pearson", "things_fmri": "cosine", "nod": "cosine"}


def model_rdm_distance(dataset: str, spec: Mapping[str, Any], settings: ScoreSettings) -> str:
    """The model-RDM distance for an RSA set: the command line's, else the set's, else the published default."""
    return (
        settings.model_rdm_distance_metric
        or spec.get("model_rdm_distance_metric")
        or MODEL_RDM_DEFAULTS.get(dataset, "pearson")
    )


def nights_split(spec: Mapping[str, Any]) -> str | None:
    """The NIGHTS split to score: ``test`` unless the set names one (``all``: every split)."""
    split = spec.get("split", NIGHTS_DEFAULT_SPLIT)
    return None if split in (None, "all") else str(split)


TABLE_KEYS = ("annotations_file", "metadata_csv", "index_csv", "data_csv")


def _evalset_record(dataset: str, spec: Mapping[str, Any], settings: ScoreSettings) -> dict[str, Any]:
    """What decides an evaluation's numbers besides its images (the settings :meth:`EvalSet.key` hashes).

    The spec, the size and mtime of the table and reference files it reads (so a corrected RDM or CSV
    at the same path is evaluated again), and the score settings only where they matter (RSA sets).
    """
    rsa_set = dataset in RSA_DATASETS
    used = {k: v for k, v in spec.items() if rsa_set or k != "reference_rdms"}
    files = [str(spec[k]) for k in TABLE_KEYS if spec.get(k)]
    if rsa_set:
        files += [str(p) for p in (spec.get("reference_rdms") or {}).values()]
    stamps = {}
    for path in files:
        st = os.stat(path)
        stamps[path] = [st.st_size, st.st_mtime_ns]
    scoring = {**settings.__dict__, "model_rdm_distance_metric": model_rdm_distance(dataset, spec, settings)}
    if dataset == "nights":
        used = {**used, "split": nights_split(spec)}
    return {"spec": used, "files": stamps, **(scoring if rsa_set else {})}


def build_evalset(dataset: str, spec: Mapping[str, Any], settings: ScoreSettings) -> EvalSet:
    """An :class:`EvalSet` from an ``evalsets.yaml`` entry (paths already resolved)."""
    paths, scorer = _load_evalset(dataset, spec, settings)
    return EvalSet(dataset, paths, scorer, _evalset_record(dataset, spec, settings))  # after loading: files exist


def _load_evalset(dataset: str, spec: Mapping[str, Any], settings: ScoreSettings) -> tuple[list[Path], Scorer]:
    def rsa_scorer_for(n: int, groups: Sequence[Any] | None = None) -> Scorer:
        references = load_references(spec.get("reference_rdms") or {}, n, settings.reference_rdm_distance_metric)
        return rsa_scorer(
            references,
            model_rdm_distance(dataset, spec, settings),
            settings.rsa_similarity_metric,
            settings.n_boot,
            settings.seed,
            groups,
        )

    if dataset in ("things", "cka"):
        names, targets = read_things_csv(spec["annotations_file"])
        paths = [Path(spec["img_dir"]) / name for name in names]
        check_files_exist(paths, spec["annotations_file"], f"put the images in {spec['img_dir']}.")
        return paths, cka_scorer(targets) if dataset == "cka" else rsa_scorer_for(len(paths))
    if dataset == "things_fmri":
        fmri = load_things_fmri(spec["metadata_csv"], spec["img_dir"])
        return list(fmri.image_paths), rsa_scorer_for(len(fmri.concept_names), fmri.concepts)
    if dataset == "nod":
        nod = load_nod(
            spec["index_csv"], spec["img_dir"], spec.get("max_images_per_category"), int(spec.get("seed", 0))
        )
        return list(nod.image_paths), rsa_scorer_for(len(nod.images))
    if dataset == "nights":
        nights = load_nights(spec["data_csv"], spec["img_dir"], nights_split(spec))
        return list(nights.image_paths), two_afc_scorer(nights, nights_split(spec))
    raise DataError(f"unknown dataset {dataset!r}. Fix: use one of {list(DATASETS)}.")
