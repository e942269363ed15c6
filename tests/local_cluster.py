"""A real Ray cluster for tests: ``ray start --head`` plus nodes joined with ``ray start --address``,
on 127.0.0.1, each with its own free ports and temp dir, and a HOME of its own (Ray's token).

Stopping never uses ``ray stop`` (it kills every Ray process of the user on the machine, other
people's tests included): each node runs ``ray start --block``, which stops the processes it
started when it gets SIGTERM (and the kernel kills them if it dies: Ray's fate sharing); anything
still alive whose command line names one of this cluster's temp dirs is then killed by its pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).with_name("ray"))
NODE_PORTS = (
    "--node-manager-port",
    "--object-manager-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--metrics-export-port",
)
HEAD_PORTS = ("--port", "--dashboard-port", "--ray-client-server-port")


def free_ports(n: int) -> list[int]:
    """n distinct ports free right now (bound together, then released)."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


class LocalCluster:
    """Start with ``start()``, add nodes with ``add_node()``, always ``stop()`` (a context manager)."""

    def __init__(self, home: Path, env: dict[str, str] | None = None, token: bool = True):
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.env = {
            k: v
            for k, v in (env or os.environ).items()
            if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
        }
        self.env["HOME"] = str(self.home)
        self.token = token
        self.nodes: list[tuple[subprocess.Popen, str]] = []
        self.port = self.dashboard_port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def token_text(self) -> str:
        return (self.home / ".ray" / "auth_token").read_text().strip()

    def _launch(self, args: list[str], env: dict[str, str], num_cpus: int) -> None:
        temp = tempfile.mkdtemp(prefix="hbr", dir="/tmp")  # short: Ray's unix socket paths must stay < 108 bytes
        ports = free_ports(len(NODE_PORTS))
        flags = [x for pair in zip(NODE_PORTS, map(str, ports), strict=False) for x in pair]
        log = open(Path(temp) / "ray_start.log", "w")
        proc = subprocess.Popen(
            [
                RAY,
                "start",
                "--block",
                "--node-ip-address",
                "127.0.0.1",
                "--num-cpus",
                str(num_cpus),
                "--temp-dir",
                temp,
                "--disable-usage-stats",
                *flags,
                *args,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.nodes.append((proc, temp))

    def start(self, num_cpus: int = 1) -> LocalCluster:
        if self.token:  # the token a user has from any earlier Ray session: `ray start --head` then turns auth on
            subprocess.run([RAY, "get-auth-token", "--generate"], env=self.env, check=True, capture_output=True)
        self.port, self.dashboard_port, client = free_ports(len(HEAD_PORTS))
        self._launch(
            [
                "--head",
                "--port",
                str(self.port),
                "--dashboard-host",
                "127.0.0.1",
                "--dashboard-port",
                str(self.dashboard_port),
                "--ray-client-server-port",
                str(client),
            ],
            self.env,
            num_cpus,
        )
        wait_port(self.port)
        return self

    def add_node(self, num_cpus: int = 1) -> None:
        """A second node, as Ray 2.60 documents it: RAY_AUTH_MODE=token on every node of a token cluster."""
        env = dict(self.env, RAY_AUTH_MODE="token") if self.token else self.env
        self._launch(["--address", self.address], env, num_cpus)

    def wait_for_nodes(self, count: int, timeout: float = 90.0) -> None:
        """Until the dashboard's state API lists ``count`` live nodes (with the token, as any client)."""
        import json
        import urllib.request

        wait_port(self.dashboard_port)
        headers = {"Authorization": f"Bearer {self.token_text()}"} if self.token else {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                request = urllib.request.Request(f"{self.dashboard}/api/v0/nodes", headers=headers)
                with urllib.request.urlopen(request, timeout=10) as response:
                    nodes = json.loads(response.read())["data"]["result"]["result"]
                if sum(n.get("state") == "ALIVE" for n in nodes) >= count:
                    return
            except (OSError, KeyError, ValueError):
                pass
            time.sleep(1)
        raise TimeoutError(f"the cluster at {self.address} has not {count} nodes after {timeout:.0f} s: " + self.logs())

    def logs(self) -> str:
        return "\n".join(
            (Path(temp) / "ray_start.log").read_text()[-2000:]
            for _, temp in self.nodes
            if (Path(temp) / "ray_start.log").is_file()
        )

    def stop(self) -> list[int]:
        """Stop every node (workers first); return the pids that had to be killed afterwards."""
        for proc, _ in reversed(self.nodes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in reversed(self.nodes):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        stragglers = self.processes()
        for p in stragglers:
            with_suppressed(p.kill)
        psutil.wait_procs(stragglers, timeout=10)
        for _, temp in self.nodes:
            shutil.rmtree(temp, ignore_errors=True)
        return [p.pid for p in stragglers]

    def processes(self) -> list[psutil.Process]:
        """Live processes whose command line names one of this cluster's temp dirs."""
        temps = [temp for _, temp in self.nodes]
        found = []
        for p in psutil.process_iter(["cmdline"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if any(temp in cmd for temp in temps):
                found.append(p)
        return found

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def with_suppressed(fn) -> None:
    try:
        fn()
    except psutil.Error:
        pass
