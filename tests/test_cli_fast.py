"""The CLI builds its parser without importing torch, Ray or matplotlib: those load inside the
command that needs them, so --help and argument mistakes answer at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "ray", "matplotlib", "pandas")
PROBE = (
    "import json, runpy, sys\n"
    "sys.argv = ['hba_sweep', *json.loads(sys.argv[1])]\n"
    "try:\n"
    "    runpy.run_module('hba_sweep', run_name='__main__')\n"
    "except SystemExit as exc:\n"
    "    code = exc.code\n"
    "print(json.dumps({'code': code, 'loaded': [m for m in %r if m in sys.modules]}), file=sys.stderr)\n" % (HEAVY,)
)


def probe(*argv: str) -> tuple[int, list[str], str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argv)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )
    result = json.loads(proc.stderr.strip().splitlines()[-1])
    return result["code"], result["loaded"], proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "argv, code",
    [
        (("--help",), 0),
        (("run", "--help"), 0),
        (("status", "--help"), 0),
        (("analyze", "--help"), 0),
        (("infer", "--help"), 0),
        (("demo-data", "--help"), 0),
        (("train", "--help"), 0),
        (("logs", "--help"), 0),
        (("preview", "--help"), 0),
        (("preview", "--config", "x.yaml"), 2),  # missing --perturb-type
        (("analyze", "x", "--truncate", "max"), 2),  # a choice not offered
        (("infer",), 2),  # missing --config
        (("train",), 2),  # missing --config
        (("trian",), 2),  # unknown command
        (("run", "x.py", "--max-concurrent", "0"), 2),
    ],
)
def test_help_and_argument_errors_import_no_heavy_module(argv, code) -> None:
    got, loaded, output = probe(*argv)
    assert got == code, output
    assert loaded == [], f"{argv} imported {loaded}"


def test_top_level_help_lists_every_command() -> None:
    _, _, output = probe("--help")
    for command in ("demo-data", "train", "run", "status", "analyze", "infer"):
        assert f"    {command}" in output
