"""Fixtures of the store's tests: a throwaway PostgreSQL cluster."""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hearth.testing import free_port


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@dataclass(frozen=True)
class PostgresCluster:
    bin_dir: Path
    sockets: Path
    port: int

    def run(self, *args: str) -> None:
        """A PostgreSQL tool (initdb, pg_ctl, createdb...) as the postgres user."""
        command = ["runuser", "-u", "postgres", "--", str(self.bin_dir / args[0]), *args[1:]]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{args[0]}: {done.stderr or done.stdout}"


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A throwaway cluster of Debian's postgresql, reached over its Unix socket only (no TCP port)."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (Debian's postgresql): scripts/install-system.sh")
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("a throwaway PostgreSQL cluster is started as the postgres user, which needs root")
    root = Path(tempfile.mkdtemp(prefix="hearth-pg-"))  # pytest's own tmp dirs are closed to other users
    data, sockets = root / "data", root / "run"
    sockets.mkdir()
    shutil.chown(root, "postgres")
    shutil.chown(sockets, "postgres")
    os.chmod(root, 0o755)
    cluster = PostgresCluster(bin_dir, sockets, free_port())
    cluster.run("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8")
    options = f"-c listen_addresses='' -k {sockets} -p {cluster.port} -c fsync=off"
    cluster.run("pg_ctl", "-D", str(data), "-o", options, "-w", "-l", str(root / "log"), "start")
    try:
        yield cluster
    finally:
        cluster.run("pg_ctl", "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """A new, empty database of the cluster, for this test alone."""
    name = "hearth_" + secrets.token_hex(4)
    postgres_cluster.run("createdb", "-h", str(postgres_cluster.sockets), "-p", str(postgres_cluster.port), name)
    return f"postgresql+psycopg://postgres@/{name}?host={postgres_cluster.sockets}&port={postgres_cluster.port}"
