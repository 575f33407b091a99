"""Saved agent-ready guests, one per VM shape and VMM, shared by every Hearth process on the host."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SNAPSHOT_MAX_IDLE_S = 3 * 86400  # snapshots (and initramfs files) unused this long are removed


@dataclass(frozen=True)
class Snapshot:
    directory: Path

    @property
    def memory(self) -> Path:
        return self.directory / "memory"

    @property
    def meta(self) -> dict[str, Any]:
        return json.loads((self.directory / "meta.json").read_text())  # type: ignore[no-any-return]


class SnapshotStore:
    """Saved agent-ready guests under <cache>/snapshots/<key>/ (memory + meta.json), one per VM shape."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def get(self, key: str) -> Snapshot | None:
        snapshot = Snapshot(self.root / key)
        return snapshot if (snapshot.directory / "meta.json").exists() and snapshot.memory.exists() else None

    def discard(self, key: str) -> None:
        shutil.rmtree(self.root / key, ignore_errors=True)

    def touch(self, snapshot: Snapshot) -> None:
        with contextlib.suppress(OSError):
            os.utime(snapshot.directory / "meta.json")

    def prune(self, max_age_s: float = SNAPSHOT_MAX_IDLE_S) -> int:
        """Remove snapshots not restored for `max_age_s` (older agents, images or shapes nobody uses)."""
        removed = 0
        if not self.root.is_dir():
            return 0
        now = time.time()
        for entry in self.root.iterdir():
            meta = entry / "meta.json"
            try:
                stale = now - (meta if meta.exists() else entry).stat().st_mtime > max_age_s
            except OSError:
                continue
            if stale and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
            elif stale and entry.name.endswith(".lock"):
                with contextlib.suppress(OSError):
                    entry.unlink()
        return removed

    def try_lock(self, key: str) -> int | None:
        """The lock for saving `key` (a descriptor to pass to `unlock`), or None while another process holds it."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / f".{key}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    @staticmethod
    def unlock(fd: int) -> None:
        os.close(fd)

    def workdir(self, key: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f".{key}-", dir=self.root))

    def commit(self, key: str, work: Path) -> Snapshot:
        target = self.root / key
        shutil.rmtree(target, ignore_errors=True)
        work.rename(target)
        return Snapshot(target)
