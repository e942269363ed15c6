"""Shared clusters: dashboard on 127.0.0.1 with Ray's token auth, no token printed, no stray writes.

- ``connect`` (what ``run`` uses) starts the dashboard bound to 127.0.0.1 only (printed URL and
  the listening socket), token authentication stays on (401 without the token, 200 with it);
  ``--dashboard-host`` is the only way to bind elsewhere, and then the CLI says so.
- A tiny study run through the CLI (dashboard on, HOME, cwd and TMPDIR in a scratch folder)
  never prints Ray's token, and writes nothing but ``<storage>/<NAME>/...`` (experiment and
  prefix cache). Ray's and torch's own files are theirs and excluded: Ray's session dirs under
  /tmp/ray (RAY_TMPDIR, outside the snapshot), the token Ray generates at ``$HOME/.ray/auth_token``,
  the dashboard's multiprocessing socket dir ``$TMPDIR/pymp-*`` and torch's ``$TMPDIR/torchinductor_*``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import ray

from hba_sweep.cli import build_parser  # noqa: E402
from hba_sweep.sweep.runner import RunOptions, connect  # noqa: E402
from hba_sweep.training.demo_data import make_demo_data  # noqa: E402

# .ci/run's second step (-m long): a real cluster, storage or tracker end to end
pytestmark = [pytest.mark.slow, pytest.mark.long]
ROOT = Path(__file__).resolve().parent.parent


def token_file(home: Path | None = None) -> Path:
    """Where Ray 2.60 keeps its auth token (ray/_private/authentication: Path.home()/.ray/auth_token)."""
    return (home or Path.home()) / ".ray" / "auth_token"


def listening(port: int, timeout: float = 20.0) -> list:
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [c for c in psutil.net_connections(kind="tcp") if c.status == "LISTEN" and c.laddr.port == port]
        if found:
            return found
        time.sleep(0.3)
    return []


def get(url: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=20) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_dashboard_binds_localhost_with_token_auth(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert os.environ.get("RAY_AUTH_MODE", "").lower() != "disabled"
    printed: list[str] = []
    assert connect(RunOptions(ray_init={"num_cpus": 1, "log_to_driver": False}, echo=printed.append))
    try:
        url = next(line.split("http://", 1)[1] for line in printed if "Ray dashboard: http://" in line)
        host, port = url.rsplit(":", 1)
        assert host == "127.0.0.1", printed
        sockets = listening(int(port))
        assert sockets and {c.laddr.ip for c in sockets} == {"127.0.0.1"}, sockets  # not 0.0.0.0 / ::
        token = token_file().read_text().strip()
        assert token and not any(token in line for line in printed)
        assert any("auth_token" in line for line in printed)  # says where the token is, not what it is
        assert get(f"http://{url}/api/version", None) == 401  # token authentication is on
        assert get(f"http://{url}/api/version", "not-the-token") in (401, 403)
        assert get(f"http://{url}/api/version", token) == 200
    finally:
        ray.shutdown()


def test_dashboard_host_only_by_request(monkeypatch):
    """The CLI default is 127.0.0.1; --dashboard-host passes through to ray.init and is announced."""
    parser = build_parser()
    assert parser.parse_args(["run", "s.py"]).dashboard_host == "127.0.0.1"
    assert parser.parse_args(["run", "s.py", "--dashboard-host", "0.0.0.0"]).dashboard_host == "0.0.0.0"
    calls: list[dict] = []

    class Context:
        dashboard_url = "0.0.0.0:8265"

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw) or Context())
    printed: list[str] = []
    connect(RunOptions(dashboard_host="0.0.0.0", echo=printed.append))
    assert calls[0]["dashboard_host"] == "0.0.0.0" and calls[0]["include_dashboard"] is True
    assert any("reachable from other machines" in line for line in printed)
    calls.clear()
    connect(RunOptions(echo=printed.append))
    assert calls[0]["dashboard_host"] == "127.0.0.1"


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with (size, mtime_ns); directories too."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            out[str(path.relative_to(root))] = (st.st_size if path.is_file() else 0, st.st_mtime_ns)
    return out


@pytest.mark.timeout(600)  # a driver run (300 s allowed) and status (120 s)
def test_cli_study_prints_no_token_and_writes_only_its_experiment(tmp_path):
    data, home, cwd, tmp, storage = (tmp_path / d for d in ("demo", "home", "cwd", "tmp", "store"))
    make_demo_data(data)
    for d in (home, cwd, tmp, storage):
        d.mkdir()
    space = tmp_path / "space.py"
    space.write_text(f"""
NAME = "study"
BASE_CONFIG = {str(data / "train.yaml")!r}
PARAM_SPACE = {{"backbone": "hba-tiny", "pretrained": "none", "device": "cpu", "epochs": 2, "random_seed": 1,
               "perturb_type": "label_shuffle", "perturb_epoch": 1, "perturb_length": 1, "perturb_seed": 42}}
RESOURCES = {{"cpu": 1}}
""")
    env = {k: v for k, v in os.environ.items() if k not in ("HBA_SWEEP_FAULT", "RAY_ADDRESS", "RAY_AUTH_MODE")}
    # RAY_TMPDIR: Ray would put its session dir (and unix sockets, <=107 bytes) under $TMPDIR; keep it in /tmp/ray
    env.update(
        HOME=str(home),
        TMPDIR=str(tmp),
        RAY_TMPDIR="/tmp",
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    before = tree(tmp_path)
    run = subprocess.run(
        [sys.executable, "-m", "hba_sweep", "run", str(space), "--storage", str(storage), "--verbose", "1"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    status = subprocess.run(
        [sys.executable, "-m", "hba_sweep", "status", str(storage / "study")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = run.stdout + run.stderr + status.stdout + status.stderr
    assert run.returncode == 0, output[-4000:]
    assert "2 finished (2 trials)" in status.stdout
    assert "Ray dashboard: http://127.0.0.1:" in run.stdout  # bound to localhost by default

    tokens = [f.read_text().strip() for f in (token_file(home), token_file()) if f.is_file()]
    assert token_file(home).is_file(), "Ray generated no token in $HOME: token auth was not on"
    assert all(t and t not in output for t in tokens)

    after = tree(tmp_path)
    changed = sorted(p for p, info in after.items() if before.get(p) != info)
    experiment = f"store{os.sep}study"
    # Third-party files, not ours: Ray's token ($HOME/.ray/auth_token; its session dirs are in /tmp/ray, outside
    # this snapshot), the multiprocessing forkserver socket dir of Ray's dashboard ($TMPDIR/pymp-*), and the
    # empty cache dir torch makes when it imports ($TMPDIR/torchinductor_<user>).
    theirs = (f"home{os.sep}.ray", f"tmp{os.sep}pymp-", f"tmp{os.sep}torchinductor_")
    stray = [
        p
        for p in changed
        if not (
            p in ("store", "home", "tmp")
            or p == experiment
            or p.startswith(experiment + os.sep)
            or p.startswith(theirs)
        )
    ]
    assert not stray, f"written outside <storage>/<NAME>: {stray}"
    assert any(p.startswith(f"{experiment}{os.sep}prefix_cache{os.sep}") for p in changed)  # the cache is in there
    assert not any(before.get(p) != info for p, info in after.items() if p.startswith(("demo", "space.py")))
    assert not list(cwd.iterdir())  # nothing in the working directory (no ray_results/, no data/)
    assert not [p for p in tmp.iterdir() if p.name.startswith("hba_")]  # trial scratch dirs are removed
