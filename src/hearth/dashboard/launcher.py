"""Start the dashboard as a child process next to the API (`hearth up`, `hearth serve --dashboard`)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parent / "app.py"
PR_SET_PDEATHSIG = 1


def streamlit_command(host: str, port: int) -> list[str]:
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
    api_key: str | None,
    data_dir: Path,
    log: int | None = None,
) -> subprocess.Popen[bytes]:
    """The dashboard process; it gets SIGTERM if this process dies without stopping it."""
    env = {**os.environ, "HEARTH_API_URL": api_url, "HEARTH_DATA_DIR": str(data_dir)}
    if api_key:
        env["HEARTH_API_KEY"] = api_key
    return subprocess.Popen(
        streamlit_command(host, port),
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
