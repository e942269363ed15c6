"""Paths from data files and configs stay inside their folders; credentials are never printed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import write_small_run_config

from hba_sweep import cli
from hba_sweep.data.evalsets import load_nights, load_nod, load_things_fmri
from hba_sweep.foundation.errors import DataError
from hba_sweep.foundation.redaction import redact, redact_text

SECRET = "SECRETYY"


def invoke(argv: list) -> int:
    try:
        return int(cli.main([str(a) for a in argv]))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def train_with_image_name(demo_dir: Path, tmp_path: Path, name: str, capsys) -> tuple[int, str]:
    config, _, small_csv = write_small_run_config(demo_dir, tmp_path, "escape")
    lines = small_csv.read_text().splitlines()
    cells = lines[3].split(",")
    cells[1] = name
    small_csv.write_text("\n".join(lines[:3] + [",".join(cells)] + lines[4:]) + "\n")
    capsys.readouterr()
    code = invoke(["train", "--config", config])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("relative", [True, False], ids=["dotdot", "absolute"])
def test_image_name_outside_img_dir_is_refused_without_saying_whether_it_exists(demo_dir, tmp_path, capsys, relative):
    (tmp_path / "outside.png").write_bytes((demo_dir / "images" / "demo_0000.png").read_bytes())  # exists
    messages = []
    for stem in ("outside", "nowhere"):  # the first file exists, the second does not
        target = tmp_path / f"{stem}.png"
        name = os.path.relpath(target, demo_dir / "images") if relative else str(target)
        code, err = train_with_image_name(demo_dir, tmp_path, name, capsys)
        assert code == 2 and "Traceback" not in err, err
        assert "row 3" in err and "image_name" in err and "Fix:" in err, err
        assert "not found" not in err and "not a readable image" not in err, err
        messages.append(err.replace(name, "<NAME>"))
    assert messages[0] == messages[1]  # the same message whether or not the outside file exists
    assert not (tmp_path / "results" / "escape" / "checkpoints").exists()


def test_evalset_paths_outside_img_dir_are_refused(tmp_path):
    fmri = tmp_path / "fmri.csv"
    fmri.write_text(",concept,session,run,subject_id,trial_id,stimulus\n0,cat,1,1,1,1,../../etc/passwd\n")
    with pytest.raises(DataError, match=r"column 'stimulus'.*contains '\.\.'.*Fix:"):
        load_things_fmri(fmri, tmp_path)
    nod = tmp_path / "nod.csv"
    nod.write_text("image,category\na.jpg,..\n")
    with pytest.raises(DataError, match=r"column 'category'.*contains '\.\.'"):
        load_nod(nod, tmp_path)
    nights = tmp_path / "nights.csv"
    nights.write_text("ref_path,left_path,right_path,left_vote,right_vote,split\n/etc/passwd,a.png,b.png,1,2,test\n")
    with pytest.raises(DataError, match=r"column 'ref_path'.*absolute path"):
        load_nights(nights, tmp_path)


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "x\\y"])
def test_run_name_with_path_parts_is_refused(demo_dir, tmp_path, capsys, name):
    config, _, _ = write_small_run_config(demo_dir, tmp_path, "ok")
    before = files_under(tmp_path)
    code = invoke(["train", "--config", config, "--set", f"run_name={name}"])
    err = capsys.readouterr().err
    assert code == 2 and "run_name" in err and "Fix:" in err and "Traceback" not in err, err
    assert files_under(tmp_path) == before


def test_redact_hides_user_password_and_secret_options():
    uri = f"s3://AKIAXX:{SECRET}@bucket/exp?endpoint_override=h:9000&secret_key={SECRET}&region=eu"
    shown = redact(uri)
    assert SECRET not in shown and "AKIAXX" not in shown
    assert shown.startswith("s3://***@bucket/exp?") and "region=eu" in shown and "endpoint_override=h:9000" in shown
    assert redact("/data/rr/demo") == "/data/rr/demo"
    assert redact("s3://bucket/x") == "s3://bucket/x"
    text = redact_text(f"error: {uri}: cannot open (secret_key={SECRET}); try 's3://...' or gs://u:{SECRET}@b/x.")
    assert SECRET not in text and "AKIAXX" not in text
    assert text.startswith("error: s3://***@bucket/exp?") and ": cannot open" in text and "'s3://...'" in text


@pytest.mark.parametrize("command", ["analyze", "status"])
def test_cli_errors_never_print_credentials(command, capsys):
    code = invoke([command, f"s3://AKIAXX:{SECRET}@bucket/exp?endpoint_override=127.0.0.1:9&secret_key={SECRET}"])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert SECRET not in out + err and "AKIAXX" not in out + err, err
    assert "s3://***@bucket/exp" in err


def test_unexpected_errors_are_printed_redacted(monkeypatch, capsys):
    def boom(args):
        raise RuntimeError(f"storage failed at s3://AKIAXX:{SECRET}@bucket/x")

    monkeypatch.setattr("hba_sweep.cli.sweep_commands.status_command", boom)
    code = invoke(["status", "somewhere"])
    err = capsys.readouterr().err
    assert code == 1 and "RuntimeError" in err and SECRET not in err and "s3://***@bucket/x" in err
