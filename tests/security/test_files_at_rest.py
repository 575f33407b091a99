"""Files at rest: the data dir is 0700, the database (with its -wal/-shm) and the key files 0600, on a
fresh data dir and on one an older Hearth left with loose modes; sandboxes still read their code."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from hearth.testing import HearthServer

CODE = "import os\ndef handler(event, context):\n    return os.environ['SECRET']\n"
NOBODY = 65534


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def start_without_configured_key(data_dir: Path) -> HearthServer:
    """A server that generates its admin key into the data dir (no HEARTH_API_KEY), as on a first start."""
    server = HearthServer(data_dir, env={"HEARTH_API_KEY": ""})
    server.start()
    server.client.headers["Authorization"] = f"Bearer {(data_dir / 'api_key').read_text().strip()}"
    return server


def private_files(data_dir: Path) -> list[Path]:
    files = [data_dir / "api_key", data_dir / "dashboard_key", data_dir / "hearth.db"]
    files += [p for p in (data_dir / "hearth.db-wal", data_dir / "hearth.db-shm") if p.exists()]
    return files


def assert_private(data_dir: Path) -> None:
    assert mode(data_dir) == 0o700, oct(mode(data_dir))
    assert (data_dir / "hearth.db-wal").exists()  # SQLite in WAL mode: its companions are checked too
    for path in private_files(data_dir):
        assert mode(path) == 0o600, (path.name, oct(mode(path)))
    if os.geteuid() == 0:  # another local user (nobody) can read none of it
        for path in [data_dir / "hearth.db", data_dir / "api_key"]:
            denied = subprocess.run(["/bin/cat", str(path)], user=NOBODY, capture_output=True)
            assert denied.returncode != 0 and b"Permission denied" in denied.stderr, denied


def deploy_and_call(server: HearthServer, name: str) -> None:
    server.deploy(name, CODE, env={"SECRET": "s3cret"})
    response = server.invoke(name)
    assert response.status_code == 200 and response.json() == "s3cret", response.text  # the sandbox read its code


def test_a_fresh_data_dir_is_private(tmp_path: Path, runtime_images: dict[str, str], fname: str) -> None:
    data_dir = tmp_path / "data"
    server = start_without_configured_key(data_dir)
    try:
        deploy_and_call(server, fname)
        assert_private(data_dir)
    finally:
        server.stop()


def test_loose_modes_of_an_existing_data_dir_are_fixed_at_start(
    tmp_path: Path, runtime_images: dict[str, str], fname: str
) -> None:
    data_dir = tmp_path / "data"
    server = start_without_configured_key(data_dir)
    try:
        deploy_and_call(server, fname)
    finally:
        server.stop()
    # as an older Hearth (or a copy with a default umask) left it
    os.chmod(data_dir, 0o755)
    for path in [*private_files(data_dir), data_dir / "hearth.db-wal"]:
        if path.exists():
            os.chmod(path, 0o644)
    (data_dir / "hearth.db-wal").touch()
    os.chmod(data_dir / "hearth.db-wal", 0o644)

    server.start()
    try:
        assert_private(data_dir)
        response = server.invoke(fname)
        assert response.status_code == 200 and response.json() == "s3cret", response.text
    finally:
        server.stop()


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
def test_sqlite_files_made_before_the_database_are_private(tmp_path: Path, suffix: str) -> None:
    from hearth.store.private import secure_sqlite

    database = tmp_path / "elsewhere" / "hearth.db"
    database.parent.mkdir()
    Path(f"{database}{suffix}").write_bytes(b"")
    os.chmod(f"{database}{suffix}", 0o644)
    secure_sqlite(f"sqlite:///{database}")
    assert mode(database) == 0o600 and mode(Path(f"{database}{suffix}")) == 0o600
