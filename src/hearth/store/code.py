"""Function code kept as files under the data dir, content-addressed by sha256."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

SOURCE_FILE = {"python": "main.py", "javascript": "main.js"}


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


class CodeStore:
    def __init__(self, root: Path) -> None:
        self.root = root
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
                    path = staging / name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(content)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            os.chmod(staging, 0o755)
            try:
                staging.rename(target)
            except OSError:  # another writer stored the same content first
                shutil.rmtree(staging, ignore_errors=True)
        return StoredCode(path=sha, sha256=sha, size=size)

    def directory(self, path: str) -> Path:
        return self.root / path

    def read_source(self, language: str, path: str) -> str:
        source = self.directory(path) / SOURCE_FILE[language]
        return source.read_text() if source.exists() else ""
