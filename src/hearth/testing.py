"""A real Hearth server process on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

import base64
import io
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


JOB_ENDED = {"succeeded", "failed", "timed_out"}


class HearthServer:
    """A Hearth API process started the way a user starts it, on a free loopback port."""

    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str] | None = None,
        log_dir: Path | None = None,
        args: list[str] | None = None,
        api_key: str | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.args = args or []  # more `hearth serve` options, e.g. ["--dashboard", "--dashboard-port", "8599"]
        self.port = free_port()
        self.api_key = api_key or "test-" + secrets.token_hex(8)  # nodes of one cluster share it
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = (log_dir or data_dir.parent) / f"server-{self.port}.log"
        self.client = httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.api_key}"}, timeout=60
        )

    def start(self) -> None:
        env = {
            **os.environ,
            "HEARTH_DATA_DIR": str(self.data_dir),
            "HEARTH_PORT": str(self.port),
            "HEARTH_API_KEY": self.api_key,
            **self.extra_env,
        }
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hearth.cli", "serve", *self.args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Hearth exited at start:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"Hearth did not start:\n{self.log_path.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    # conveniences
    def deploy(self, name: str, code: str, language: str = "python", **settings: Any) -> dict[str, Any]:
        response = self.client.post(
            "/api/functions", json={"name": name, "language": language, "code": code, **settings}
        )
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    def invoke(self, name: str, event: Any = None) -> httpx.Response:
        return self.client.post(f"/api/functions/{name}/invoke", json=event if event is not None else {})

    def wait_job(self, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
        """An async invocation once it has ended (succeeded, failed or timed out)."""
        deadline = time.monotonic() + timeout_s
        while True:
            job: dict[str, Any] = self.client.get(f"/api/invocations/{job_id}").json()
            if job["status"] in JOB_ENDED:
                return job
            assert time.monotonic() < deadline, f"job {job_id} did not finish: {job}"
            time.sleep(0.1)


def zipped(files: dict[str, str]) -> bytes:
    """A zip bundle of `files` (name -> text), as deploys and the Lambda API take it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def b64_zip(files: dict[str, str]) -> str:
    """`zipped(files)` in base64, for a deploy's `zip_base64`."""
    return base64.b64encode(zipped(files)).decode()
