"""Bundles: zip archives from users are checked before anything is stored."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import pytest

from hearth.packaging.bundle import BundleError, pack_files, read_directory, unpack_zip
from hearth.packaging.deps import ManifestError, find_dependencies
from hearth.store.code import CodeStore

LIMITS = {"max_zip_bytes": 1 << 20, "max_unzipped_bytes": 1 << 20}


def zip_of(entries: dict[str, bytes], *, symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def test_files_and_folders_unpack_with_their_paths() -> None:
    files = unpack_zip(zip_of({"app.py": b"x", "pkg/__init__.py": b"", "pkg/sub/mod.py": b"y"}), **LIMITS)
    assert files == {"app.py": b"x", "pkg/__init__.py": b"", "pkg/sub/mod.py": b"y"}


@pytest.mark.parametrize("name", ["../evil.py", "a/../../evil.py", "/etc/cron.d/x", "C:/x.py", "..\\evil.py"])
def test_paths_leaving_the_bundle_are_refused(name: str) -> None:
    with pytest.raises(BundleError):
        unpack_zip(zip_of({name: b"x", "ok.py": b""}), **LIMITS)


def test_symlinks_are_refused() -> None:
    with pytest.raises(BundleError, match="symbolic links"):
        unpack_zip(zip_of({"app.py": b""}, symlink="link"), **LIMITS)


def test_a_zip_bomb_stops_at_the_unpacked_limit() -> None:
    bomb = zip_of({"zeros.bin": b"\0" * (8 << 20)})  # 8 MiB of zeros compress to a few KiB
    assert len(bomb) < 64 * 1024
    with pytest.raises(BundleError, match="size limit"):
        unpack_zip(bomb, **LIMITS)


def test_not_a_zip_and_an_empty_zip_are_clear_errors() -> None:
    with pytest.raises(BundleError, match="not a zip"):
        unpack_zip(b"definitely not a zip", **LIMITS)
    with pytest.raises(BundleError, match="no files"):
        unpack_zip(zip_of({}), **LIMITS)


def test_packing_is_deterministic_and_round_trips() -> None:
    files = {"b.py": b"2", "a/x.js": b"1"}
    assert pack_files(files) == pack_files(dict(reversed(files.items())))
    assert unpack_zip(pack_files(files), **LIMITS) == files


def test_reading_a_directory_leaves_out_caches_and_excluded_files(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("x")
    (tmp_path / "hearth.toml").write_text("name = 'x'")
    for junk in ("__pycache__/app.cpython-311.pyc", "node_modules/left-pad/index.js", ".git/HEAD", "tests/t.py"):
        (tmp_path / junk).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / junk).write_text("junk")
    files = read_directory(tmp_path, [*("__pycache__", "node_modules", ".git", "hearth.toml"), "tests"], max_bytes=1000)
    assert sorted(files) == ["app.py"]


def test_dependency_lists_are_found_and_keyed_by_content() -> None:
    assert find_dependencies("python", {"app.py": b""}) is None
    assert find_dependencies("python", {"requirements.txt": b"# nothing yet\n"}) is None
    one = find_dependencies("python", {"requirements.txt": b"six==1.16.0\n"})
    same = find_dependencies("python", {"requirements.txt": b"# pinned\nsix==1.16.0   # comment\n\n"})
    other = find_dependencies("python", {"requirements.txt": b"six==1.15.0\n"})
    assert one and same and other
    assert one.layer_key("3.11", "p") == same.layer_key("3.11", "p")
    assert one.layer_key("3.11", "p") != other.layer_key("3.11", "p")
    assert one.layer_key("3.11", "p") != one.layer_key("3.12", "p")  # a new runtime never reuses a layer
    assert find_dependencies("javascript", {"package.json": b'{"name": "x"}'}) is None
    js = find_dependencies("javascript", {"package.json": b'{"dependencies": {"is-number": "7.0.0"}}'})
    assert js is not None and js.manifest == "package.json"


@pytest.mark.parametrize(
    ("language", "files"),
    [
        ("python", {"requirements.txt": b"--index-url http://example.invalid/simple\nsix\n"}),
        ("python", {"requirements.txt": b"-e .\n"}),
        ("python", {"requirements.txt": b"pkg @ file:///etc/passwd\n"}),
        ("javascript", {"package.json": b"{not json"}),
        ("javascript", {"package.json": b'{"dependencies": {"x": "file:../../secret"}}'}),
    ],
)
def test_dependency_lists_that_reach_outside_the_registries_are_refused(language: str, files: dict[str, bytes]) -> None:
    with pytest.raises(ManifestError):
        find_dependencies(language, files)


@pytest.mark.parametrize(
    ("files", "named"),
    [
        ({"a": b"file", "a/b": b"under it"}, "'a/b'"),  # a tree the file system cannot hold
        ({"d/" + "n" * 300: b""}, "n" * 40),  # a name no file system takes
    ],
)
def test_files_the_code_store_cannot_write_are_the_bundles_fault(
    tmp_path: Path, files: dict[str, bytes], named: str
) -> None:
    """Bundles that bypass unpack_zip's checks still fail as a BundleError naming the entry, not an OSError."""
    store = CodeStore(tmp_path / "code")
    with pytest.raises(BundleError, match=named):
        store.put_files(files)
    assert [p.name for p in store.root.iterdir()] == []  # nothing half-written is left
