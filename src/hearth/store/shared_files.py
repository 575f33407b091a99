"""Function code and dependency layers kept in the store too, so that every node can serve every function.

A node writes a version's code (and each layer it builds) into its data dir as before and, when
sharing is on, also as a tar.gz blob in the database (`code/<sha256>`, `layer/<key>`; written once,
never changed). A node that lacks a directory fetches its blob and unpacks it beside the final place,
renaming it in only when whole, as CodeStore and LayerBuilder do with what they write.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from hearth.store.models import Blob

log = logging.getLogger(__name__)


def pack(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as archive:
        for entry in sorted(directory.iterdir()):
            archive.add(entry, arcname=entry.name)  # recursive; symlinks stay symlinks
    return buffer.getvalue()


def unpack(data: bytes, target: Path) -> None:
    """Unpacks into `target` (which must not exist) through a staging directory beside it."""
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=target.parent))
    try:
        tree = staging / "tree"
        tree.mkdir()
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            archive.extractall(tree, filter="data")  # no absolute paths, no links out of the tree
        os.chmod(tree, 0o755)
        try:
            tree.rename(target)
        except OSError:  # fetched by another task first
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class SharedFiles:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def put(self, blob_id: str, directory: Path) -> bool:
        """Stores `directory` as `blob_id` unless the store has it already; True if stored now."""
        with self.sessions() as session:
            if session.scalar(select(Blob.id).where(Blob.id == blob_id)) is not None:
                return False
        data = pack(directory)
        with self.sessions() as session:
            session.add(Blob(id=blob_id, size=len(data), data=data, created_at=datetime.now(UTC)))
            try:
                session.commit()
            except IntegrityError:  # another node stored the same content first
                return False
        log.info("stored %s in the database (%d bytes) for the other nodes", blob_id, len(data))
        return True

    def fetch(self, blob_id: str, target: Path) -> bool:
        """Makes `target` hold blob `blob_id`; False if the store does not have it."""
        if target.is_dir():
            return True
        with self.sessions() as session:
            data = session.scalar(select(Blob.data).where(Blob.id == blob_id))
        if data is None:
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        unpack(data, target)
        log.info("fetched %s from the database (%d bytes)", blob_id, len(data))
        return True
