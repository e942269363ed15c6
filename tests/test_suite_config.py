"""The test suite itself: a hang fails, a broken install fails, the soak test runs in CI."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = ("ray", "rsatoolbox", "psutil", "pandas", "torch", "open_clip", "peft", "pyarrow", "scipy")


def test_every_test_has_a_default_timeout(request):
    assert float(request.config.getini("timeout") or 0) > 0  # pytest-timeout: a deadlock fails, not hangs


def test_required_dependencies_are_imported_not_skipped():
    pattern = re.compile(r"importorskip\(\s*['\"](%s)['\"]" % "|".join(REQUIRED))
    offenders = [
        f"{p.name}: {m.group(0)}" for p in (ROOT / "tests").glob("*.py") for m in pattern.finditer(p.read_text())
    ]
    assert not offenders, offenders


def test_ci_runs_the_soak_test():
    steps = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if "pytest" in line]
    assert any(re.search(r"-m\s+['\"]?soak", line) for line in steps), steps
    assert any(re.search(r"-m\s+['\"][^'\"]*\blong\b", line) for line in steps), steps  # the kill-point test
