"""Function disks of `provided` microVMs: what of an image reaches the disk, and that unpacking cannot reach the host.

Hostile archives are made here with tarfile (an image's export could hold any of these entries); the
unpacking runs in a real container of Hearth's `provided` image, as for a real image.
"""

from __future__ import annotations

import contextlib
import io
import stat
import tarfile
from pathlib import Path

import docker
import pytest

from hearth.engine.backends.vm import disks as microvm_disks
from hearth.engine.backends.vm.disks import FunctionDisks, filter_image

pytestmark = pytest.mark.usefixtures("provided_images")


@pytest.fixture(scope="module")
def provided_images(docker_client: docker.DockerClient, runtime_images: dict[str, str]) -> None:
    from hearth.images import provided

    provided.ensure_base_image(docker_client)


def entry(archive: tarfile.TarFile, name: str, kind: bytes = tarfile.REGTYPE, **fields: object) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    data = b"x" if kind == tarfile.REGTYPE else b""
    info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    archive.addfile(info, io.BytesIO(data) if data else None)


def filtered(build: object, relay: Path) -> dict[str, tarfile.TarInfo]:
    source, target = io.BytesIO(), io.BytesIO()
    with tarfile.open(fileobj=source, mode="w", format=tarfile.PAX_FORMAT) as archive:
        build(archive)  # type: ignore[operator]
    source.seek(0)
    with tarfile.open(fileobj=source, mode="r|") as reader, tarfile.open(fileobj=target, mode="w") as writer:
        filter_image(reader, writer, relay)
    target.seek(0)
    with tarfile.open(fileobj=target) as result:
        return {member.name: member for member in result.getmembers()}


def test_the_filter_keeps_files_links_and_dirs_and_drops_the_rest(tmp_path: Path) -> None:
    (tmp_path / "relay").write_bytes(b"relay")

    def build(archive: tarfile.TarFile) -> None:
        entry(archive, "usr", tarfile.DIRTYPE, mode=0o755)
        entry(archive, "usr/bin/tool", mode=0o6755)  # setuid + setgid
        entry(archive, "usr/bin/same", tarfile.LNKTYPE, linkname="usr/bin/tool")
        entry(archive, "usr/bin/dangling", tarfile.LNKTYPE, linkname="etc/shadow")  # no such file kept
        entry(archive, "etc/alternatives/awk", tarfile.SYMTYPE, linkname="/usr/bin/mawk")  # absolute: kept
        entry(archive, "../outside", mode=0o644)
        entry(archive, "/etc/../../abs", mode=0o644)
        entry(archive, "dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3)
        entry(archive, "disk", tarfile.BLKTYPE, devmajor=8, devminor=0)
        entry(archive, "pipe", tarfile.FIFOTYPE)
        entry(archive, "proc/self", mode=0o644)
        entry(archive, "tmp/left", mode=0o644)
        entry(archive, "opt", tarfile.SYMTYPE, linkname="/")  # the relay's directory must be a real one
        entry(archive, "capable", mode=0o755, pax_headers={"SCHILY.xattr.security.capability": "x"})

    members = filtered(build, tmp_path)
    assert stat.S_IMODE(members["usr/bin/tool"].mode) == 0o755
    assert members["usr/bin/same"].islnk() and members["usr/bin/same"].linkname == "usr/bin/tool"
    assert members["etc/alternatives/awk"].issym() and members["etc/alternatives/awk"].linkname == "/usr/bin/mawk"
    assert members["capable"].pax_headers == {}
    for gone in ("usr/bin/dangling", "../outside", "outside", "abs", "dev/null", "disk", "pipe", "proc/self"):
        assert gone not in members, gone
    assert "tmp/left" not in members and members["tmp"].isdir() and stat.S_IMODE(members["tmp"].mode) == 0o1777
    assert all(members[point].isdir() for point in ("opt", "hearth", "dev", "proc", "opt/hearth-relay"))
    assert members["opt/hearth-relay/relay"].size == len(b"relay")


def test_the_filter_bounds_the_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "relay").write_bytes(b"relay")
    monkeypatch.setattr(microvm_disks, "MAX_BYTES", 1)  # one byte: the second one-byte file is over

    def build(archive: tarfile.TarFile) -> None:
        entry(archive, "a")
        entry(archive, "b")

    with pytest.raises(microvm_disks.FunctionDiskError, match="over"):
        filtered(build, tmp_path)


def test_unpacking_runs_in_a_container_that_cannot_reach_the_host(
    tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    """A symlink out of the tree, then a file through it: the write lands in the container, never on the host."""
    canary = tmp_path / "host-dir"
    canary.mkdir()
    work = tmp_path / "work"
    (work / "in").mkdir(parents=True)
    (work / "out").mkdir()
    with tarfile.open(work / "in" / "fs.tar", "w") as archive:
        entry(archive, "escape", tarfile.SYMTYPE, linkname=str(canary))
        entry(archive, "escape/pwned", mode=0o644)
        entry(archive, "up", tarfile.SYMTYPE, linkname="../../../../../../../.." + str(canary))
        entry(archive, "up/pwned-too", mode=0o644)
        entry(archive, "ok", mode=0o644)
    with contextlib.suppress(microvm_disks.FunctionDiskError):  # tar may refuse entries behind links
        FunctionDisks._unpack(docker_client, work)
    assert list(canary.iterdir()) == []  # what matters: nothing landed outside the tree
    assert (work / "out" / "ok").is_file() and (work / "out" / "escape").is_symlink()  # it did unpack
