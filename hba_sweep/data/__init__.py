"""Data: the study's image transform and store, THINGS CSVs, reference RDMs, evaluation sets."""

from hba_sweep.data.evalsets import (
    FmriSet,
    NightsSet,
    NodSet,
    load_nights,
    load_nod,
    load_things_fmri,
    read_evalsets_yaml,
)
from hba_sweep.data.images import (
    IMAGE_MEAN,
    IMAGE_STD,
    ImageStore,
    build_transform,
    load_image_uint8,
    normalize_uint8,
)
from hba_sweep.data.rdm_io import load_rdm, save_rdm_mat, vector_to_square
from hba_sweep.data.things import ThingsDataset, read_things_csv

__all__ = [
    "IMAGE_MEAN",
    "IMAGE_STD",
    "ImageStore",
    "build_transform",
    "load_image_uint8",
    "normalize_uint8",
    "ThingsDataset",
    "read_things_csv",
    "load_rdm",
    "save_rdm_mat",
    "vector_to_square",
    "FmriSet",
    "NodSet",
    "NightsSet",
    "load_things_fmri",
    "load_nod",
    "load_nights",
    "read_evalsets_yaml",
]
