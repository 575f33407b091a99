"""Files at rest that other local users must not read: the data dir (0700), the SQLite database with
its -wal/-shm/-journal files and the key files (0600).

Modes are set explicitly where files are made and fixed at every start (a data dir made by an older
Hearth, or copied with loose modes, is tightened). No process-wide umask: sandbox directories under
the run dir must stay traversable by the sandboxes' uid 65534 (docs/security.md, "Files at rest").
Sandboxes never read the data dir: a version's code and layer are hard-linked or copied into the
sandbox's own directory (hearth.engine.backends.docker.materialize_code).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from sqlalchemy.engine import make_url

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal")
# Files of the data dir that hold secrets (the admin key, the dashboard's key).
KEY_FILES = ("api_key", "dashboard_key")


def secure_data_dir(data_dir: Path) -> None:
    """Creates the data dir if need be; it and its key files get their private modes."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    os.chmod(data_dir, PRIVATE_DIR_MODE)
    for name in KEY_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(data_dir / name, PRIVATE_FILE_MODE)


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for another database or an in-memory one)."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    if parsed.database.startswith("file:"):  # a URI filename: not ours to manage
        return None
    return Path(parsed.database).expanduser().resolve()


def secure_sqlite(url: str) -> None:
    """A SQLite database file (created empty if missing, so it is never world-readable) and its
    companions get mode 0600. SQLite gives -wal/-shm files it makes later the database file's mode."""
    path = sqlite_file(url)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE))
    for suffix in SQLITE_COMPANIONS:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(f"{path}{suffix}", PRIVATE_FILE_MODE)


def write_private(path: Path, text: str) -> None:
    """Writes `text` to `path` atomically, mode 0600 from the start (never readable by others)."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
