"""Function code kept as files under the data dir, content-addressed by sha256, and the dependency
layers beside it (`layers/<key>`); shared through the store when several nodes serve (shared_files)."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hearth.packaging.bundle import BundleError
from hearth.packaging.deps import LAYERS_DIR
from hearth.store.shared_files import SharedFiles

SOURCE_FILE = {"python": "main.py", "javascript": "main.js", "provided": "bootstrap"}


@dataclass(frozen=True)
class StoredCode:
    path: str  # relative to the code store root
    sha256: str
    size: int


def digest(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + len(files[name]).to_bytes(8, "big") + files[name])
    return h.hexdigest()


# The disk, not the bundle: these stay OSErrors (a 507 from hearth.api.errors.storage_errors).
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})


def write_entry(root: Path, name: str, content: bytes) -> None:
    """Writes one file of a bundle; a name this file system cannot take is the bundle's fault (BundleError)."""
    path = root / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    except OSError as exc:
        if exc.errno in STORAGE_ERRNOS:
            raise
        raise BundleError(f"cannot write {name!r} from the bundle: {exc.strerror or exc}") from None


class CodeStore:
    def __init__(self, root: Path, shared: SharedFiles | None = None) -> None:
        self.root = root
        self.shared = shared  # None: this node's data dir is the only copy
        root.mkdir(parents=True, exist_ok=True)

    def put_source(self, language: str, code: str) -> StoredCode:
        return self.put_files({SOURCE_FILE[language]: code.encode()})

    def put_files(self, files: dict[str, bytes]) -> StoredCode:
        sha = digest(files)
        target = self.root / sha
        size = sum(len(content) for content in files.values())
        if not target.is_dir():
            staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
            try:
                for name, content in files.items():
                    write_entry(staging, name, content)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            os.chmod(staging, 0o755)
            try:
                staging.rename(target)
            except OSError:  # another writer stored the same content first
                shutil.rmtree(staging, ignore_errors=True)
        if self.shared is not None:
            self.shared.put(f"code/{sha}", target)
        return StoredCode(path=sha, sha256=sha, size=size)

    def ensure_code(self, path: str) -> bool:
        """True if the code at `path` is here, fetched from the store if need be."""
        target = self.directory(path)
        return target.is_dir() or (self.shared is not None and self.shared.fetch(f"code/{path}", target))

    def ensure_version(self, code_path: str, layer: str | None) -> bool:
        """True if a version's code and its layer (if any) are here, fetched from the store if need be."""
        return self.ensure_code(code_path) and (not layer or self.ensure_layer(layer))

    def layer_path(self, key: str) -> Path:
        return self.root / LAYERS_DIR / key

    def ensure_layer(self, key: str) -> bool:
        """True if dependency layer `key` is here, fetched from the store if need be."""
        return self.layer_path(key).is_dir() or self.fetch_layer(key)

    def fetch_layer(self, key: str) -> bool:
        """True if dependency layer `key` was not here and has now been fetched from the store."""
        target = self.layer_path(key)
        return not target.is_dir() and self.shared is not None and self.shared.fetch(f"layer/{key}", target)

    def share_layer(self, key: str) -> None:
        """Offers a layer this node built to the others (a no-op when not sharing)."""
        if self.shared is not None:
            self.shared.put(f"layer/{key}", self.layer_path(key))

    def directory(self, path: str) -> Path:
        return self.root / path

    def read_source(self, language: str, path: str) -> str:
        source = self.directory(path) / SOURCE_FILE[language]
        return source.read_text() if source.exists() else ""
