"""Evaluation-set loaders: real published index formats, generated sets, malformed inputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from hba_sweep.data.evalsets import load_nights, load_nod, load_things_fmri, read_evalsets_yaml
from hba_sweep.data.rdm_io import load_rdm
from hba_sweep.foundation.errors import DataError
from hba_sweep.training.demo_data import make_demo_data

REF = Path(__file__).resolve().parents[2] / "shared" / "reference-data"
needs_ref = pytest.mark.skipif(not REF.is_dir(), reason=f"reference data not found at {REF} (../shared absent)")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("evalsets") / "demo"
    make_demo_data(out, n_train=20)
    return out


@pytest.fixture(scope="module")
def sets(demo) -> dict:
    return read_evalsets_yaml(demo / "evalsets.yaml")


# ----------------------------------------------------------------------------- real formats


@needs_ref
def test_real_things_fmri_metadata():
    s = load_things_fmri(REF / "things_fmri_stimulus_metadata_720_images.csv", "/imgs", check_files=False)
    assert len(s.image_paths) == 720 and len(s.concept_names) == 720
    assert s.image_paths[0] == Path("/imgs/acorn/acorn_12s.jpg")
    assert s.concepts[3] == "airplane" and s.concept_names[s.concept_index[3]] == "airplane"


@needs_ref
def test_real_nod_index_seeded_selection():
    index = REF / "nod_2k_images.csv"
    everything = load_nod(index, "/imgs", None, check_files=False)
    assert len(everything.images) == 2000 and len(set(everything.categories)) == 1000
    assert everything.image_paths[0] == Path("/imgs/n01440764/n01440764_6275.JPEG")
    one = load_nod(index, "/imgs", max_images_per_category=1, seed=3, check_files=False)
    again = load_nod(index, "/imgs", max_images_per_category=1, seed=3, check_files=False)
    other = load_nod(index, "/imgs", max_images_per_category=1, seed=4, check_files=False)
    assert len(one.images) == 1000 and len(set(one.categories)) == 1000
    assert one.images == again.images and one.images != other.images
    assert all(p.parent.name == c for p, c in zip(one.image_paths, one.categories, strict=False))


# ----------------------------------------------------------------------------- generated sets


def test_demo_evalsets_yaml_resolves_paths(sets, demo):
    assert set(sets) == {"things", "things_fmri", "nod", "nights"}
    assert sets["nod"]["index_csv"] == str(demo / "nod" / "index.csv")
    for spec in sets.values():
        for rdm in spec.get("reference_rdms", {}).values():
            assert Path(rdm).is_file()


def test_demo_fmri_loads_with_concept_rdms(sets):
    spec = sets["things_fmri"]
    s = load_things_fmri(spec["metadata_csv"], spec["img_dir"])
    assert len(s.image_paths) == 36 and len(s.concept_names) == 12
    assert np.bincount(s.concept_index).tolist() == [3] * 12
    for roi in ("V1", "IT"):
        rdm = load_rdm(spec["reference_rdms"][roi], n=len(s.concept_names))
        assert np.all(np.diag(rdm) == 0)


def test_demo_nod_selection_matches_rdms(sets):
    spec = sets["nod"]
    s = load_nod(spec["index_csv"], spec["img_dir"], spec["max_images_per_category"], spec["seed"])
    assert len(s.images) == 20 and all(p.is_file() for p in s.image_paths)
    assert all(np.unique(s.categories, return_counts=True)[1] == 2)
    for roi in ("V1", "IT"):
        load_rdm(spec["reference_rdms"][roi], n=len(s.images))


def test_demo_nights_triplets(sets):
    spec = sets["nights"]
    test = load_nights(spec["data_csv"], spec["img_dir"], split=spec["split"])
    every = load_nights(spec["data_csv"], spec["img_dir"])
    assert len(test) == 20 and len(every) == 30 and set(every.splits) == {"train", "val", "test"}
    assert len(test.image_paths) == 60 and all(p.is_file() for p in test.image_paths)
    assert set(test.human_choice.tolist()) == {0, 1}
    assert test.ref_idx.max() < len(test.image_paths)


def test_nights_choice_follows_votes_and_skips_ties(tmp_path):
    rows = [
        "ref_path,left_path,right_path,left_vote,right_vote,split",
        "r0.png,a0.png,b0.png,5,1,test",
        "r1.png,a1.png,b1.png,0.2,0.8,test",
        "r2.png,a2.png,b2.png,3,3,test",
        "r0.png,a1.png,b0.png,1,2,val",
    ]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    s = load_nights(tmp_path / "data.csv", tmp_path, check_files=False)
    assert s.human_choice.tolist() == [0, 1, 1] and s.ties_skipped == 1 and s.rows.tolist() == [0, 1, 3]
    assert s.image_paths[s.ref_idx[2]] == s.image_paths[s.ref_idx[0]] == tmp_path / "r0.png"
    assert len(load_nights(tmp_path / "data.csv", tmp_path, split="val", check_files=False)) == 1


# ----------------------------------------------------------------------------- malformed inputs


def _copy(demo: Path, tmp_path: Path, rel: str) -> Path:
    """A private copy of one demo set so a test can break it."""
    shutil.copytree(demo / rel, tmp_path / rel)
    return tmp_path / rel


def _edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, count))


def _broken(kind: str, demo: Path, tmp_path: Path):
    """Break one evaluation set; returns (loader call, file that must be named)."""
    if kind.startswith("nights"):
        root = _copy(demo, tmp_path, "nights")
        csv = root / "data.csv"
        if kind == "nights_missing_column":
            _edit(csv, "right_vote", "rvote")
        elif kind == "nights_bad_vote":
            _edit(csv, ",5,1,", ",five,1,")
        elif kind == "nights_negative_vote":
            _edit(csv, ",5,1,", ",5,-1,")
        elif kind == "nights_missing_image":
            (root / "distort" / "000" / "003_1.png").unlink()
        elif kind == "nights_empty_path":
            _edit(csv, "ref/000/002.png", "")
        split = "nowhere" if kind == "nights_unknown_split" else "test"
        return lambda: load_nights(csv, root, split=split), csv
    if kind.startswith("nod"):
        root = _copy(demo, tmp_path, "nod")
        csv = root / "index.csv"
        if kind == "nod_missing_column":
            _edit(csv, "image,category", "img,category")
        elif kind == "nod_duplicate":
            csv.write_text(csv.read_text() + csv.read_text().splitlines()[1] + "\n")
        elif kind == "nod_missing_image":
            shutil.rmtree(root / "images" / "n01440764")
        limit = 0 if kind == "nod_zero_limit" else 2
        return lambda: load_nod(csv, root / "images", limit, 0), csv
    root = _copy(demo, tmp_path, "things_fmri")
    csv = root / "stimulus_metadata.csv"
    if kind == "fmri_missing_column":
        _edit(csv, "stimulus", "filename")
    elif kind == "fmri_empty_concept":
        _edit(csv, "\n4,anchor,", "\n4,,")
    elif kind == "fmri_two_concepts":
        _edit(csv, "anchor_01s.png", "acorn_01s.png")  # the same stimulus under acorn and anchor
    elif kind == "fmri_missing_image":
        (root / "images" / "drum" / "drum_02s.png").unlink()
    elif kind == "fmri_empty":
        csv.write_text("")
    return lambda: load_things_fmri(csv, root / "images"), csv


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("nights_missing_column", ["missing column", "right_vote"]),
        ("nights_bad_vote", ["column 'left_vote'", "'five'", "not a number"]),
        ("nights_negative_vote", ["column 'right_vote'", "negative"]),
        ("nights_missing_image", ["not found", "003_1.png"]),
        ("nights_empty_path", ["column 'ref_path'", "empty"]),
        ("nights_unknown_split", ["'nowhere'", "['test', 'train', 'val']"]),
        ("nod_missing_column", ["missing column", "'image'"]),
        ("nod_duplicate", ["listed twice"]),
        ("nod_missing_image", ["not found", "n01440764"]),
        ("nod_zero_limit", ["max_images_per_category=0"]),
        ("fmri_missing_column", ["missing column", "stimulus"]),
        ("fmri_empty_concept", ["column 'concept'", "empty"]),
        ("fmri_two_concepts", ["more than one concept", "acorn_01s.png"]),
        ("fmri_missing_image", ["not found", "drum_02s.png"]),
        ("fmri_empty", ["empty"]),
    ],
)
def test_malformed_evalsets(demo, tmp_path, kind, expected):
    call, named = _broken(kind, demo, tmp_path)
    with pytest.raises(DataError) as info:
        call()
    message = str(info.value)
    assert str(named) in message and "Fix" in message
    for part in expected:
        assert part in message, (part, message)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("imagenet: {img_dir: x}\n", "unknown dataset 'imagenet'"),
        ("nod: {index_csv: a.csv, img_dir: x}\n", "missing ['reference_rdms']"),
        ("nights: [1, 2]\n", "must be a mapping"),
        ("nod: {index_csv: a.csv, img_dir: x, reference_rdms: {}}\n", "reference_rdms must map"),
        ("nod: [unclosed\n", "not valid YAML"),
    ],
)
def test_malformed_evalsets_yaml(tmp_path, text, expected):
    (tmp_path / "evalsets.yaml").write_text(text)
    with pytest.raises(DataError, match=expected.replace("[", r"\[").replace("(", r"\(")) as info:
        read_evalsets_yaml(tmp_path / "evalsets.yaml")
    assert str(tmp_path / "evalsets.yaml") in str(info.value)
