"""Images, THINGS CSVs and reference RDMs: the study's oracle, the real files, malformed inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from hba_sweep.data.images import (
    IMAGE_MEAN,
    IMAGE_STD,
    ImageStore,
    build_transform,
    load_image_uint8,
    normalize_uint8,
)
from hba_sweep.data.rdm_io import load_rdm, save_rdm_mat
from hba_sweep.data.things import ThingsDataset, read_things_csv
from hba_sweep.foundation.errors import DataError

REF = Path(__file__).resolve().parents[2] / "shared" / "reference-data"
needs_ref = pytest.mark.skipif(not REF.is_dir(), reason=f"reference data not found at {REF} (../shared absent)")


def write_image(path: Path, seed: int, size=(50, 37), mode="RGB") -> Path:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path)
    return path


def things_csv_text(names, n_dims=66, values=None, index=True) -> str:
    header = ([""] if index else []) + ["image_name"] + [str(k) for k in range(n_dims)]
    lines = [",".join(header)]
    for i, name in enumerate(names):
        row = values[i] if values is not None else [f"{(i + 1) * 0.5 + k * 0.01:.4f}" for k in range(n_dims)]
        lines.append(",".join(([str(i)] if index else []) + [name] + list(row)))
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- images


def test_transform_is_the_studys():
    t = build_transform(32).transforms
    assert [type(x).__name__ for x in t] == ["Resize", "ToTensor", "Normalize"]
    assert tuple(t[0].size) == (32, 32)
    assert tuple(t[2].mean) == IMAGE_MEAN and tuple(t[2].std) == IMAGE_STD


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
def test_uint8_path_equals_torchvision_oracle(tmp_path, mode):
    path = write_image(tmp_path / f"im.{'png'}", seed=1, size=(53, 41), mode=mode)
    oracle = build_transform(32)(Image.open(path).convert("RGB"))
    fast = normalize_uint8(load_image_uint8(path, 32))
    assert fast.dtype == torch.float32 and fast.shape == (3, 32, 32)
    assert torch.allclose(fast, oracle, atol=1e-6, rtol=0)


def test_image_store_batches_equal_oracle_and_lazy_mode(tmp_path):
    paths = [write_image(tmp_path / f"{i}.jpg", seed=i, size=(40 + i, 30 + 2 * i)) for i in range(10)]
    oracle = torch.stack([build_transform(24)(Image.open(p).convert("RGB")) for p in paths])
    store = ImageStore(paths, 24)
    lazy = ImageStore(paths, 24, in_memory=False)
    idx = [7, 0, 3, 3]
    assert torch.allclose(store.batch(idx), oracle[idx], atol=1e-6, rtol=0)
    assert torch.equal(store.batch(idx), lazy.batch(idx))
    assert torch.equal(store.batch(torch.tensor(idx)), store.batch(np.array(idx)))
    assert store.all().shape == (10, 3, 24, 24) and len(store) == 10
    assert store.uint8([1]).dtype == torch.uint8


def test_things_dataset_yields_study_transform(tmp_path):
    names = [f"a_{i}.png" for i in range(5)]
    for i, n in enumerate(names):
        write_image(tmp_path / "img" / n, seed=i)
    (tmp_path / "t.csv").write_text(things_csv_text(names))
    ds = ThingsDataset(tmp_path / "t.csv", tmp_path / "img", image_size=16)
    name, image, target = ds[2]
    assert name == "a_2.png" and target.dtype == torch.float32 and target.shape == (66,)
    oracle = build_transform(16)(Image.open(tmp_path / "img" / name).convert("RGB"))
    assert torch.allclose(image, oracle, atol=1e-6, rtol=0)
    assert ds.targets.shape == (5, 66) and ds.targets.dtype == torch.float32
    assert torch.equal(ds.images([2]), image[None])
    assert ds.image_paths[2] == tmp_path / "img" / "a_2.png" and len(ds) == 5
    assert float(ds.targets[0, 0]) == pytest.approx(0.5)


# ----------------------------------------------------------------------------- the real files


@needs_ref
@pytest.mark.parametrize(
    "name, rows",
    [("spose_embedding66d_rescaled_1806train.csv", 1806), ("spose_embedding66d_rescaled_48val_reordered.csv", 48)],
)
def test_real_things_csvs_load(name, rows):
    names, targets = read_things_csv(REF / name)
    assert len(names) == rows and targets.shape == (rows, 66) and targets.dtype == np.float32
    assert np.isfinite(targets).all() and targets.min() >= 0
    assert names[0].endswith(".jpg")


@needs_ref
def test_real_first_row_values():
    names, targets = read_things_csv(REF / "spose_embedding66d_rescaled_1806train.csv")
    assert names[0] == "aardvark_01b.jpg"
    assert targets[0, 2] == pytest.approx(85.82517215060831, rel=1e-6)


@needs_ref
def test_real_rdm48_loads():
    rdm = load_rdm(REF / "RDM48_triplet.mat", n=48)
    assert rdm.shape == (48, 48) and rdm.dtype == np.float64
    assert np.array_equal(rdm, rdm.T) and np.all(np.diag(rdm) == 0)
    assert np.array_equal(rdm, scipy.io.loadmat(REF / "RDM48_triplet.mat")["RDM48_triplet"])


# ----------------------------------------------------------------------------- RDM formats


def _rdm(n=6, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, 4))
    return 1 - np.corrcoef(x)


def test_rdm_formats_round_trip(tmp_path):
    rdm = _rdm()
    np.fill_diagonal(rdm, 0)
    vec = rdm[np.triu_indices(6, k=1)]
    np.save(tmp_path / "sq.npy", rdm)
    np.save(tmp_path / "vec.npy", vec)
    np.savez(tmp_path / "sq.npz", rdm=rdm)
    np.savetxt(tmp_path / "sq.csv", rdm, delimiter=",")
    np.savetxt(tmp_path / "vec.csv", vec[None], delimiter=",")
    save_rdm_mat(tmp_path / "sq.mat", "RDM", rdm)
    scipy.io.savemat(tmp_path / "vec.mat", {"v": vec})
    for name in ("sq.npy", "vec.npy", "sq.npz", "sq.csv", "vec.csv", "sq.mat", "vec.mat"):
        assert np.allclose(load_rdm(tmp_path / name, n=6), rdm, atol=1e-12), name


def test_save_rdm_mat_is_deterministic(tmp_path):
    save_rdm_mat(tmp_path / "a.mat", "RDM48_triplet", _rdm())
    save_rdm_mat(tmp_path / "b.mat", "RDM48_triplet", _rdm())
    assert (tmp_path / "a.mat").read_bytes() == (tmp_path / "b.mat").read_bytes()
    assert list(k for k in scipy.io.loadmat(tmp_path / "a.mat") if not k.startswith("__")) == ["RDM48_triplet"]


# ----------------------------------------------------------------------------- malformed inputs


def _make_csv(tmp_path: Path, kind: str) -> Path:
    """A THINGS CSV with one defect; the file is named after the defect."""
    names = ["x_1.jpg", "x_2.jpg", "x_3.jpg"]
    good = [[f"{k * 0.1:.2f}" for k in range(66)] for _ in names]
    path = tmp_path / f"{kind}.csv"
    if kind == "wrong_count":
        text = things_csv_text(names, n_dims=65)
    elif kind == "extra_column":
        text = things_csv_text(names).replace(",65\n", ",65,66\n", 1)
        text = "\n".join(line + ",1" if i else line for i, line in enumerate(text.strip().split("\n"))) + "\n"
    elif kind == "no_image_name":
        text = things_csv_text(names).replace("image_name", "filename", 1)
    elif kind in ("nan", "inf", "text", "blank"):
        good[1][7] = {"nan": "NaN", "inf": "inf", "text": "abc", "blank": ""}[kind]
        text = things_csv_text(names, values=good)
    elif kind == "duplicate":
        text = things_csv_text(["x_1.jpg", "x_2.jpg", "x_1.jpg"])
    elif kind == "empty":
        text = ""
    elif kind == "header_only":
        text = things_csv_text([])
    elif kind == "empty_name":
        text = things_csv_text(["x_1.jpg", " ", "x_3.jpg"])
    elif kind == "ragged":
        text = things_csv_text(names) + "3,x_4.jpg,1,2\n"
    else:
        raise AssertionError(kind)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("wrong_count", ["found 65 target columns", "expected 66", "'65'"]),
        ("extra_column", ["found 67 target columns", "'66'"]),
        ("no_image_name", ["missing column", "image_name"]),
        ("nan", ["row 2", "column '7'", "is NaN", "x_2.jpg"]),
        ("inf", ["row 2", "column '7'", "infinite"]),
        ("text", ["row 2", "column '7'", "'abc'", "not a number"]),
        ("blank", ["row 2", "column '7'", "empty"]),
        ("duplicate", ["duplicates", "x_1.jpg", "rows [1, 3]"]),
        ("empty", ["empty"]),
        ("header_only", ["no rows"]),
        ("empty_name", ["row 2", "image_name", "empty"]),
        ("ragged", ["ragged.csv"]),
    ],
)
def test_malformed_things_csv(tmp_path, kind, expected):
    path = _make_csv(tmp_path, kind)
    with pytest.raises(DataError) as info:
        read_things_csv(path)
    message = str(info.value)
    assert str(path) in message and "Fix" in message
    for part in expected:
        assert part in message, (part, message)


def test_missing_csv_file(tmp_path):
    with pytest.raises(DataError, match="nothere.csv.*not found"):
        read_things_csv(tmp_path / "nothere.csv")


def _dataset_dir(tmp_path: Path, n=4) -> tuple[Path, Path, list[str]]:
    names = [f"im_{i}.png" for i in range(n)]
    for i, name in enumerate(names):
        write_image(tmp_path / "img" / name, seed=i)
    (tmp_path / "t.csv").write_text(things_csv_text(names))
    return tmp_path / "t.csv", tmp_path / "img", names


def test_missing_image_is_named(tmp_path):
    csv, img, names = _dataset_dir(tmp_path)
    (img / names[2]).unlink()
    with pytest.raises(DataError) as info:
        ThingsDataset(csv, img, 16)
    assert "im_2.png" in str(info.value) and "1 of 4" in str(info.value) and str(csv) in str(info.value)


@pytest.mark.parametrize("content", [b"this is not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20])
def test_non_image_file_is_named(tmp_path, content):
    csv, img, names = _dataset_dir(tmp_path)
    (img / names[1]).write_bytes(content)
    for in_memory in (True, False):
        with pytest.raises(DataError) as info:
            ds = ThingsDataset(csv, img, 16, in_memory=in_memory)
            ds.images([1])
        assert str(img / names[1]) in str(info.value) and "not a readable image" in str(info.value)


def test_truncated_image_is_named(tmp_path):
    csv, img, names = _dataset_dir(tmp_path)
    write_image(img / "big.png", seed=9, size=(200, 200))
    data = (img / "big.png").read_bytes()
    (img / names[0]).write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="im_0.png"):
        ThingsDataset(csv, img, 16)


def test_missing_image_dir(tmp_path):
    csv, _, _ = _dataset_dir(tmp_path)
    with pytest.raises(DataError, match="image directory not found"):
        ThingsDataset(csv, tmp_path / "nope", 16)


def _bad_rdm(tmp_path: Path, kind: str) -> Path:
    rdm = _rdm()
    np.fill_diagonal(rdm, 0)
    if kind == "not_square":
        np.save(p := tmp_path / "not_square.npy", rdm[:, :4])
    elif kind == "asymmetric":
        rdm[1, 3] += 0.5
        save_rdm_mat(p := tmp_path / "asymmetric.mat", "RDM", rdm)
    elif kind == "nan":
        rdm[2, 4] = rdm[4, 2] = np.nan
        np.savetxt(p := tmp_path / "nan.csv", rdm, delimiter=",")
    elif kind == "inf_vector":
        vec = rdm[np.triu_indices(6, k=1)]
        vec[3] = np.inf
        np.save(p := tmp_path / "inf_vector.npy", vec)
    elif kind == "bad_vector_length":
        np.save(p := tmp_path / "bad_vector_length.npy", np.ones(14))
    elif kind == "two_variables":
        scipy.io.savemat(p := tmp_path / "two_variables.mat", {"a": rdm, "b": rdm})
    elif kind == "two_arrays":
        np.savez(p := tmp_path / "two_arrays.npz", a=rdm, b=rdm)
    elif kind == "text_csv":
        (p := tmp_path / "text_csv.csv").write_text("a,b\n1,2\n")
    elif kind == "pickled":
        np.save(p := tmp_path / "pickled.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    elif kind == "suffix":
        (p := tmp_path / "suffix.txt").write_text("1")
    elif kind == "missing":
        p = tmp_path / "missing.mat"
    elif kind == "corrupt_mat":
        (p := tmp_path / "corrupt_mat.mat").write_bytes(b"garbage" * 10)
    elif kind == "wrong_size":
        save_rdm_mat(p := tmp_path / "wrong_size.mat", "RDM", rdm)
    else:
        raise AssertionError(kind)
    return p


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("not_square", ["(6, 4)", "not square"]),
        ("asymmetric", ["not symmetric", "[1,3]"]),
        ("nan", ["non-finite", "row 2, column 4"]),
        ("inf_vector", ["non-finite", "positions [3]"]),
        ("bad_vector_length", ["length 14", "n(n-1)/2"]),
        ("two_variables", ["exactly one variable", "'a'", "'b'"]),
        ("two_arrays", ["exactly one array"]),
        ("text_csv", ["not a numeric CSV"]),
        ("pickled", ["not a readable .npy"]),
        ("suffix", ["unsupported RDM file type"]),
        ("missing", ["not found"]),
        ("corrupt_mat", ["not a readable MATLAB file"]),
        ("wrong_size", ["6x6", "48 items"]),
    ],
)
def test_malformed_rdm(tmp_path, kind, expected):
    path = _bad_rdm(tmp_path, kind)
    with pytest.raises(DataError) as info:
        load_rdm(path, n=48 if kind == "wrong_size" else None)
    message = str(info.value)
    assert str(path) in message and "Fix" in message
    for part in expected:
        assert part in message, (part, message)


def test_reference_file_of_response_patterns_becomes_an_rdm(tmp_path: Path) -> None:
    """Reference files may hold (n x d) response patterns instead of an RDM (.npy/.npz/.csv, not .mat)."""
    from hba_sweep.data.rdm_io import load_reference
    from hba_sweep.rsa import compute_model_rdm

    patterns = np.random.default_rng(0).normal(size=(6, 4))
    np.save(tmp_path / "roi.npy", patterns)
    np.testing.assert_allclose(
        load_reference(tmp_path / "roi.npy", 6, "euclidean"), compute_model_rdm(patterns, "euclidean")
    )
    rdm = compute_model_rdm(patterns)
    np.save(tmp_path / "rdm.npy", rdm)
    np.testing.assert_array_equal(load_reference(tmp_path / "rdm.npy", 6), rdm)
    with pytest.raises(DataError, match="not square"):
        load_reference(tmp_path / "roi.npy", 5)  # patterns for another number of stimuli
    save_rdm_mat(tmp_path / "roi.mat", "roi", patterns)
    with pytest.raises(DataError, match="not square"):
        load_reference(tmp_path / "roi.mat", 6)
