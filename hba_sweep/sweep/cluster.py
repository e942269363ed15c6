"""Ray for a study: start one on this machine, or join a cluster started with ``ray start``.

Ray 2.60's token authentication (https://docs.ray.io/en/latest/ray-security/token-auth.html):
``ray start --head`` turns it on when a token exists (``~/.ray/auth_token``, ``RAY_AUTH_TOKEN``,
``RAY_AUTH_TOKEN_PATH``), and a local ``ray.init()`` always does; but a driver given an explicit
address only sends the token with ``RAY_AUTH_MODE=token`` set, which nothing told the user. So
joining ``--address host:port`` (or ``RAY_ADDRESS``) with ``RAY_AUTH_MODE`` unset: if this machine
has a token, it is used (and dropped again when the cluster's dashboard says it runs without
authentication); if the cluster asks for one that is missing or wrong, the user gets exit 2 with
the fix, after one attempt instead of Ray's 20 s of retries. A browser opens the dashboard by
pasting the token into the dialog it shows, not with a header (DESIGN traps 6 and 8).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hba_sweep.foundation.errors import ConfigError

AUTH_MODE = "RAY_AUTH_MODE"
TOKEN_ENV, TOKEN_PATH_ENV = "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"
GCS_WAIT = "RAY_gcs_server_port_wait_time_s"  # Ray's connect budget (attempts, about 1 s each)
TOKEN_HINT = "~/.ray/auth_token"
PASTE_HINT = (
    "a browser asks for Ray's token: paste what `ray get-auth-token` prints on the head "
    f"(the contents of {TOKEN_HINT}) into its dialog"
)


def token_source() -> str | None:
    """Where Ray would read this machine's token, in Ray's order of precedence; None if nowhere."""
    if os.environ.get(TOKEN_ENV):
        return f"${TOKEN_ENV}"
    if os.environ.get(TOKEN_PATH_ENV):
        return f"${TOKEN_PATH_ENV} ({os.environ[TOKEN_PATH_ENV]})"
    default = Path.home() / ".ray" / "auth_token"
    return TOKEN_HINT if default.is_file() and default.read_text().strip() else None


def read_token() -> str | None:
    """This machine's token, from where ``token_source`` says Ray reads it."""
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV].strip()
    path = Path(os.environ.get(TOKEN_PATH_ENV) or Path.home() / ".ray" / "auth_token")
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def set_auth_mode(mode: str) -> None:
    """Token authentication on or off for this process and its children, as Ray does it itself
    (ray._private.authentication.authentication_token_setup._enable_token_auth)."""
    from ray._raylet import Config  # reason: the CLI parsers import cluster: --help stays Ray-free

    os.environ[AUTH_MODE] = mode
    Config.initialize("")


def split_address(address: str, origin: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(
            f"{origin}={address!r} is not host:port. Fix: give the address `ray start --head` "
            "printed, e.g. 127.0.0.1:6379, or 'auto' for the cluster running on this machine."
        )
    return host.strip("[]"), int(port)


def check_reachable(host: str, port: int, origin: str, timeout: float = 3.0) -> None:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(
            f"{origin}={host}:{port}: no Ray cluster answers there ({exc.strerror or exc}). Fix: start "
            f"one with `ray start --head --port {port}` on that machine, or give the address "
            "`ray start` printed (`ray status` on the head shows it); without --address and "
            "RAY_ADDRESS, `run` starts Ray on this machine."
        ) from None


@contextlib.contextmanager
def short_connect_budget(attempts: int = 3) -> Iterator[None]:
    """A reachable GCS answers at once; a refused token would otherwise be retried for 20 s."""
    old = os.environ.get(GCS_WAIT)
    if old is None:
        os.environ[GCS_WAIT] = str(attempts)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(GCS_WAIT, None)


def refused_token(exc: BaseException) -> bool:
    """Whether Ray's connection error (or its cause) is the GCS refusing the token."""
    while exc is not None:
        if "AuthenticationError" in repr(exc) or "InvalidAuthToken" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def dashboard_auth_mode(url: str, timeout: float = 5.0) -> str | None:
    """'token' or 'disabled' from the dashboard's public /api/authentication_mode; None if unreachable."""
    url = url if "://" in url else f"http://{url}"
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/api/authentication_mode", timeout=timeout) as response:
            return json.loads(response.read()).get("authentication_mode")
    except (OSError, ValueError, urllib.error.URLError):
        return None


def _auth_error(origin: str, address: str, had_token: str | None) -> ConfigError:
    fix = (
        f"copy the head's token to this machine's {TOKEN_HINT} (on the head, `ray get-auth-token` prints it), "
        f"or point {TOKEN_PATH_ENV} at a file holding it"
    )
    if os.environ.get(AUTH_MODE, "").lower() == "disabled":
        return ConfigError(
            f"{origin}={address}: the cluster uses Ray's token authentication but {AUTH_MODE}=disabled "
            f"is set here. Fix: unset {AUTH_MODE} and {fix}."
        )
    if had_token:
        return ConfigError(
            f"{origin}={address}: the cluster refused this machine's Ray token (from {had_token}): it "
            f"was started with another one. Fix: {fix}."
        )
    return ConfigError(
        f"{origin}={address}: the cluster uses Ray's token authentication and this machine has no "
        f"token ({TOKEN_ENV}, {TOKEN_PATH_ENV}, {TOKEN_HINT}). Fix: {fix}."
    )


def join(address: str, origin: str = "--address", **init_kwargs: Any):
    """``ray.init(address)`` for a running cluster with Ray's token authentication handled; exit-2
    errors (ConfigError) for an unreachable address and a missing or refused token."""
    import ray  # reason: the CLI parsers import cluster: --help stays Ray-free

    if address != "auto" and not address.startswith("ray://"):
        check_reachable(*split_address(address, origin), origin)
    user_mode = os.environ.get(AUTH_MODE)
    token = token_source()
    if user_mode is None and token and address != "auto":  # ("auto" is Ray's own: it turns the token on itself)
        set_auth_mode("token")
    try:
        with short_connect_budget():
            ctx = ray.init(address=address, **init_kwargs)
    except ConnectionError as exc:
        if refused_token(exc):
            raise _auth_error(origin, address, token) from None
        raise ConfigError(
            f"{origin}={address}: could not join the Ray cluster there ({exc}). Fix: check that "
            "`ray status --address ...` works from this machine."
        ) from None
    url = getattr(ctx, "dashboard_url", None)
    if user_mode is None and token and url and dashboard_auth_mode(url) == "disabled":
        ray.shutdown()  # the cluster runs without authentication: its processes would not send our token
        set_auth_mode("disabled")
        with short_connect_budget():
            ctx = ray.init(address=address, **init_kwargs)
    return ctx


SOCKET_PATH_MAX = 107  # AF_UNIX path bytes on Linux
SOCKET_TAIL = len("/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store")


def short_temp_dir(echo: Callable[[str], None]) -> str | None:
    """Ray's session folder holds its AF_UNIX sockets, whose paths may not exceed 107 bytes: under a long
    ``TMPDIR`` (common on clusters) Ray cannot start. None (Ray's own choice) when that fits or
    ``RAY_TMPDIR`` is set; else ``/tmp/ray`` (said once), or a ConfigError saying how to set one."""
    if os.environ.get("RAY_TMPDIR"):
        return None
    default = os.path.join(os.environ.get("TMPDIR") or "/tmp", "ray")
    if len(os.fsencode(default)) + SOCKET_TAIL <= SOCKET_PATH_MAX:
        return None
    fallback = "/tmp/ray"
    if not (os.path.isdir("/tmp") and os.access("/tmp", os.W_OK)):
        raise ConfigError(
            f"TMPDIR={os.environ['TMPDIR']}: too long for Ray's sockets (their paths may not exceed "
            f"{SOCKET_PATH_MAX} bytes) and /tmp is not writable. Fix: export RAY_TMPDIR=<a short "
            "writable folder, e.g. /dev/shm/$USER>, then run again."
        )
    echo(
        f"note: TMPDIR is too long for Ray's sockets ({SOCKET_PATH_MAX} bytes at most): Ray's session files go "
        f"to {fallback} (set RAY_TMPDIR to choose another short folder)"
    )
    return fallback


def connect(
    address: str | None,
    origin: str,
    include_dashboard: bool,
    dashboard_host: str,
    echo: Callable[[str], None],
    **init_kwargs: Any,
) -> None:
    """Join ``address`` or start Ray here; print the dashboard and how a browser opens it."""
    import ray  # reason: the CLI parsers import cluster: --help stays Ray-free

    if address:
        ctx = join(address, origin, **init_kwargs)
    else:
        init_kwargs.setdefault("_temp_dir", short_temp_dir(echo))
        ctx = ray.init(include_dashboard=include_dashboard, dashboard_host=dashboard_host, **init_kwargs)
    url = getattr(ctx, "dashboard_url", None)
    if not url:
        return
    echo(f"Ray dashboard: http://{url}")
    if not address:
        echo("  it closes when this run ends; a cluster's stays (docs/clusters-and-storage.md)")
    mode = dashboard_auth_mode(url)
    if mode == "disabled" or os.environ.get(AUTH_MODE, "").lower() == "disabled":
        echo(f"  token authentication is DISABLED ({AUTH_MODE}=disabled): anyone who reaches it has control.")
    else:
        echo(f"  {PASTE_HINT}; scripts send the header 'Authorization: Bearer <token>'")
    if not address and dashboard_host not in ("127.0.0.1", "localhost"):
        echo(f"  note: bound to {dashboard_host}, reachable from other machines.")
