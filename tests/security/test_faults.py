"""Faults of the world: a full disk, and dockerd restarting under traffic."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hearth.testing import REPO, HearthServer


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 12 MiB filesystem of its own for the data dir."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_gives_clear_errors_and_keeps_the_database_consistent(
    small_disk: Path, runtime_images: dict[str, str], tmp_path: Path
) -> None:
    server = HearthServer(small_disk / "data", log_dir=tmp_path)
    server.start()
    try:
        server.deploy("survivor", "def handler(e, c):\n    return 'alive'\n")
        assert server.invoke("survivor").json() == "alive"
        filler = small_disk / "filler"
        with open(filler, "wb") as f:  # fill the disk to the last block
            try:
                while True:
                    f.write(b"\0" * (1 << 20))
                    f.flush()
            except OSError:
                pass
        big = "x = 1\n" * 100_000
        statuses = set()
        for i in range(5):
            response = server.client.post(
                "/api/functions", json={"name": f"new-{i}", "language": "python", "code": big + f"# {i}\n"}
            )
            statuses.add(response.status_code)
            assert response.status_code in (201, 507), response.text
            if response.status_code == 507:
                assert response.json()["error"]["type"] == "InsufficientStorage"
        assert 507 in statuses
        # What was deployed keeps serving; the process is healthy.
        assert server.invoke("survivor").json() == "alive"
        assert httpx.get(f"{server.base_url}/healthz").status_code == 200
        filler.unlink()
        created = server.client.post(
            "/api/functions", json={"name": "after", "language": "python", "code": "def handler(e, c):\n    return 2\n"}
        )
        assert created.status_code == 201, created.text
        assert server.invoke("after").json() == 2
    finally:
        server.stop()
    with sqlite3.connect(small_disk / "data" / "hearth.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        names = {row[0] for row in db.execute("SELECT name FROM functions")}
    assert {"survivor", "after"} <= names


def restart_dockerd() -> None:
    pid = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True).stdout.split()
    if not pid:
        pytest.skip("dockerd is not running as a plain process here")
    subprocess.run(["kill", "-TERM", *pid], check=True)
    deadline = time.monotonic() + 60
    while subprocess.run(["pidof", "dockerd"], capture_output=True).returncode == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    subprocess.run(["bash", str(REPO / "scripts" / "ensure-docker.sh")], check=True)


@pytest.mark.slow
def test_dockerd_restart_is_survived(fresh_hearth: HearthServer, fname: str) -> None:
    fresh_hearth.deploy(fname, "def handler(e, c):\n    return 'ok'\n", max_instances=2)
    assert fresh_hearth.invoke(fname).json() == "ok"
    restart_dockerd()
    # The warm sandbox died with dockerd; calls fail clearly or succeed, and within seconds succeed again.
    deadline = time.monotonic() + 30
    seen: list[int] = []
    while time.monotonic() < deadline:
        response = fresh_hearth.invoke(fname)
        seen.append(response.status_code)
        assert response.status_code in (200, 502), response.text
        if response.status_code == 502:
            assert response.json()["error"]["type"] in ("SandboxCrashed", "SandboxStartError")
        if seen[-3:] == [200, 200, 200]:
            break
        time.sleep(0.2)
    assert seen[-3:] == [200, 200, 200], seen
    assert httpx.get(f"{fresh_hearth.base_url}/readyz", timeout=10).status_code == 200
