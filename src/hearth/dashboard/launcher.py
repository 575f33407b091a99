"""Start the dashboard as a child process next to the API (`hearth up`, `hearth serve --dashboard`)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parent / "app.py"
PR_SET_PDEATHSIG = 1
LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1"]
# The only HEARTH_ settings a dashboard started by `hearth serve --dashboard` inherits (none is a secret).
PASSED_ON = frozenset({"HEARTH_DASHBOARD_REFRESH_S", "HEARTH_DASHBOARD_TIMEOUT_S"})


def streamlit_command(host: str, port: int, allowed_hosts: list[str] | None = None) -> list[str]:
    hosts = allowed_hosts or allowed_hosts_for(host)
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.address",
        host,
        "--server.port",
        str(port),
        # DNS rebinding: a page on another site whose name resolves to this address talks to the dashboard
        # as its own origin, but its requests carry that name in `Host`: Streamlit refuses the WebSocket
        # (everything the dashboard does goes through it) unless the Host is one of these.
        *[arg for name in hosts for arg in ("--server.allowedHosts", name)],
        "--server.enableCORS",
        "true",
        "--server.enableXsrfProtection",
        "true",
        "--server.enableAgentApi",
        "false",
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--server.runOnSave",
        "false",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "viewer",
        "--global.developmentMode",
        "false",
        "--logger.level",
        "warning",
    ]


def allowed_hosts_for(host: str) -> list[str]:
    """The names a browser may use for a dashboard bound to `host`: the address itself, and the loopback
    names when it listens on loopback or on every address. Ports are not compared (Streamlit ignores them)."""
    names = [host.strip("[]")] if host not in ("", "0.0.0.0", "::") else []
    if not names or names[0] in LOOPBACK_NAMES:
        names += LOOPBACK_NAMES
    if host in ("", "0.0.0.0", "::"):
        names += [socket.gethostname(), socket.getfqdn()]
    return list(dict.fromkeys(n.lower() for n in names if n))


def child_environment(parent: dict[str, str]) -> dict[str, str]:
    """The parent's environment without Hearth's settings (HEARTH_API_KEY, HEARTH_DATABASE_URL, ...): of
    those, the dashboard gets only its own harmless ones. Secrets never reach its environment."""
    return {k: v for k, v in parent.items() if not k.upper().startswith("HEARTH_") or k.upper() in PASSED_ON}


def api_url_for(host: str, port: int) -> str:
    """The URL the dashboard uses to reach an API bound to host:port (a wildcard address means loopback)."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start(
    *,
    host: str,
    port: int,
    api_url: str,
    key_file: Path,
    allowed_hosts: list[str] | None = None,
    log: int | None = None,
) -> subprocess.Popen[bytes]:
    """The dashboard process; it gets SIGTERM if this process dies without stopping it.

    It learns its key's path (`key_file`, 0600), never a key: its environment holds no HEARTH_ secret."""
    env = {**child_environment(dict(os.environ)), "HEARTH_API_URL": api_url, "HEARTH_DASHBOARD_KEY_FILE": str(key_file)}
    return subprocess.Popen(
        streamlit_command(host, port, allowed_hosts),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()
