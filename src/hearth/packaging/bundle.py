"""Function bundles: zip archives in and out, and the checks an uploaded archive must pass.

A bundle is a flat mapping of relative file paths to contents. Uploaded zips are untrusted: names
are checked (no absolute paths, no `..`, no symlinks, no name over 255 bytes, no path that is both
a file and a directory), and sizes are counted while reading rather than taken from the archive's
headers, so a zip bomb stops at the limit. Whatever still fails to be written is a BundleError naming
the entry (hearth.store.code), so a bad bundle is always the uploader's 422, never a 500.
"""

from __future__ import annotations

import fnmatch
import io
import os
import stat
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

MAX_FILES = 20_000
MAX_NAME_BYTES = 1024
MAX_COMPONENT_BYTES = 255  # NAME_MAX: one file or directory name
# Junk that archivers add and no function needs.
SKIPPED_PREFIXES = ("__MACOSX/",)
# What `pack_directory` leaves out unless asked otherwise: VCS data, caches, installed dependencies
# (Hearth installs those itself from requirements.txt / package.json) and the manifest.
DEFAULT_EXCLUDES: tuple[str, ...] = (
    ".git",
    ".hg",
    ".svn",
    "__pycache__",
    "*.pyc",
    ".venv",
    "venv",
    "node_modules",
    ".DS_Store",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    "hearth.toml",
)
# Fixed timestamp so that packing the same files twice gives the same bytes.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


class BundleError(ValueError):
    """The archive or directory cannot be a function bundle; the message says why."""


def check_name(raw: str) -> str:
    """A safe relative POSIX path, or BundleError."""
    name = raw.replace("\\", "/")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise BundleError(f"file name longer than {MAX_NAME_BYTES} bytes: {raw[:80]!r}...")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise BundleError(f"absolute path in the archive: {raw!r}")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if not parts:
        raise BundleError(f"empty file name in the archive: {raw!r}")
    if ".." in parts:
        raise BundleError(f"'..' in a path of the archive: {raw!r}")
    if any("\0" in part for part in parts):
        raise BundleError(f"NUL byte in a file name of the archive: {raw!r}")
    for part in parts:
        if len(part.encode()) > MAX_COMPONENT_BYTES:
            raise BundleError(
                f"a name in the archive is longer than {MAX_COMPONENT_BYTES} bytes, which no file system takes: "
                f"{part[:60]!r}... in {raw[:120]!r}"
            )
    return "/".join(parts)


def unpack_zip(data: bytes, *, max_zip_bytes: int, max_unzipped_bytes: int) -> dict[str, bytes]:
    """The files of a zip archive, checked; raises BundleError with a message a user can act on."""
    if len(data) > max_zip_bytes:
        raise BundleError(f"the zip is {len(data)} bytes, over the limit of {max_zip_bytes}")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise BundleError(f"not a zip archive ({exc})") from None
    files: dict[str, bytes] = {}
    total = 0
    with archive:
        entries = archive.infolist()
        if len(entries) > MAX_FILES:
            raise BundleError(f"the zip has {len(entries)} entries, more than {MAX_FILES}")
        for info in entries:
            if info.filename.startswith(SKIPPED_PREFIXES):
                continue
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):  # checked first: a link whose name ends in "/" is still a link
                raise BundleError(f"symbolic links are not allowed in a bundle: {info.filename!r}")
            if info.is_dir():
                continue
            if info.flag_bits & 0x1:
                raise BundleError(f"encrypted entries are not supported: {info.filename!r}")
            name = check_name(info.filename)
            if name in files:
                raise BundleError(f"the zip holds {name!r} twice")
            content = _read_capped(archive, info, max_unzipped_bytes - total)
            total += len(content)
            files[name] = content
    if not files:
        raise BundleError("the zip holds no files")
    check_tree(files)
    return files


def check_tree(names: Iterable[str]) -> None:
    """Names that can all be written as files of one tree: no path both a file and a directory."""
    files = set(names)
    for name in sorted(files):
        parts = name.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent in files:
                raise BundleError(f"{parent!r} is both a file and a directory in the archive (see {name!r})")


def _read_capped(archive: zipfile.ZipFile, info: zipfile.ZipInfo, room: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        with archive.open(info) as entry:
            while chunk := entry.read(1 << 16):
                size += len(chunk)
                if size > room:
                    raise BundleError("the zip unpacks to more than the size limit of a bundle")
                chunks.append(chunk)
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, EOFError) as exc:
        raise BundleError(f"cannot read {info.filename!r} from the zip ({exc})") from None
    return b"".join(chunks)


def pack_files(files: dict[str, bytes]) -> bytes:
    """A deterministic zip of `files` (sorted names, fixed timestamps)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, files[name])
    return buffer.getvalue()


def excluded(relative: str, patterns: Iterable[str]) -> bool:
    """True if any path component, or the whole relative path, matches one of the glob patterns."""
    parts = PurePosixPath(relative).parts
    for pattern in patterns:
        pattern = pattern.rstrip("/")
        if fnmatch.fnmatch(relative, pattern) or any(fnmatch.fnmatch(part, pattern) for part in parts):
            return True
    return False


def read_directory(root: Path, excludes: Iterable[str] = DEFAULT_EXCLUDES, *, max_bytes: int) -> dict[str, bytes]:
    """The files under `root` as a bundle (symlinked files are followed, symlinked dirs are not)."""
    patterns = tuple(excludes)
    if not root.is_dir():
        raise BundleError(f"{root} is not a directory")
    files: dict[str, bytes] = {}
    total = 0
    for current, dirs, names in os.walk(root):
        base = Path(current)
        dirs[:] = sorted(d for d in dirs if not excluded((base / d).relative_to(root).as_posix(), patterns))
        for name in sorted(names):
            path = base / name
            relative = path.relative_to(root).as_posix()
            if excluded(relative, patterns) or not path.is_file():
                continue
            content = path.read_bytes()
            total += len(content)
            if total > max_bytes:
                raise BundleError(f"{root} holds more than {max_bytes} bytes of files")
            files[check_name(relative)] = content
            if len(files) > MAX_FILES:
                raise BundleError(f"{root} holds more than {MAX_FILES} files")
    if not files:
        raise BundleError(f"{root} holds no files to deploy")
    return files


def handler_file(language: str, handler: str) -> str:
    """The file that must exist for `handler` (`module.function`, the Lambda convention)."""
    return handler_files(language, handler)[0]


# Node: the files Lambda's runtime tries for a handler's module, in its order (UserFunction.js).
NODE_EXTENSIONS: tuple[str, ...] = (".js", ".mjs", ".cjs")


def handler_files(language: str, handler: str) -> tuple[str, ...]:
    """The files one of which must exist for `handler`: `module.py`; `module.js`, `.mjs` or `.cjs`; a custom
    runtime's `bootstrap`."""
    if language == "provided":  # a custom runtime: the bootstrap reads the handler ($_HANDLER) its own way
        return ("bootstrap",)
    module, _, _ = handler.rpartition(".")
    module = module or "main"
    if language == "python":
        return (module + ".py",)
    return tuple(module + extension for extension in NODE_EXTENSIONS)
