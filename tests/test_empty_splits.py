"""A split with no training or no validation image is refused in validation, before any model is built."""

from __future__ import annotations

import pytest
import yaml
from conftest import SMALL_ROWS, write_small_run_config

from hba_sweep import cli
from hba_sweep.config import split_sizes


def invoke(argv: list) -> int:
    return int(cli.main([str(a) for a in argv]))


def test_split_sizes_follow_train_portion():
    assert split_sizes(1806, 0.8) == (1444, 362)  # int(train_portion * N), as the published random_split
    assert split_sizes(40, 0.99) == (39, 1) and split_sizes(40, 0.01) == (0, 40)


# int(train_portion * N) < N for train_portion < 1: only the training side can be empty
@pytest.mark.parametrize("rows,portion,n_train,n_val", [(SMALL_ROWS, 0.01, 0, 40), (1, 0.8, 0, 1), (2, 0.4, 0, 2)])
def test_empty_split_is_refused_with_the_numbers(
    demo_dir, tmp_path, capsys, monkeypatch, rows, portion, n_train, n_val
):
    import hba_sweep.training.run_inputs

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built for an invalid config")

    monkeypatch.setattr(hba_sweep.training.run_inputs, "create_model", no_model)
    config, base, small_csv = write_small_run_config(demo_dir, tmp_path, "tiny")
    lines = small_csv.read_text().splitlines()
    small_csv.write_text("\n".join(lines[: rows + 1]) + "\n")
    base["train_portion"] = portion
    config.write_text(yaml.safe_dump(base))

    code = invoke(["train", "--config", config])

    err = capsys.readouterr().err
    assert code == 2, err
    assert small_csv.name in err and f"has {rows} image(s)" in err and f"train_portion={portion}" in err, err
    assert f"gives {n_train} training and {n_val} validation image(s)" in err and "Fix:" in err, err
    assert not (tmp_path / "results").exists()
