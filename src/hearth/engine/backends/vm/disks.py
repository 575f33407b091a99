"""Function disks: a container image's file system as a read-only disk for `provided` microVMs.

A custom runtime (language `provided`) on a microVM sees the same file system as in a container: its
image's. For a zip function that is Hearth's `provided` runtime image (bash as /bin/sh, curl), for an
image function the function's own image. The VM gets that file system as a second read-only virtio-blk
disk, an ext4 built from the image once and cached by image id (and the relay's hash: the relay is on
the disk, at /opt/hearth-relay/relay, as it is bind-mounted into containers).

An image is user input, so it is never unpacked by the host itself: `docker export` streams the
image's flattened file system, the host only *parses* that tar (tarfile, stream mode) and writes a
filtered copy, and GNU tar in a container (no network, no capabilities but chown / dac_override /
fowner, no device nodes possible, read-only root) unpacks the copy into an empty directory. The filter
keeps directories, regular files, symlinks and hard links to kept files, with relative names without
`..`; it drops device nodes, FIFOs, extended attributes (file capabilities), setuid/setgid bits and
what sits where the guest mounts its own (/dev, /proc, /tmp, /hearth, /opt/hearth-relay), and bounds
the total size and number of entries. Symlinks may point anywhere: only the guest, chrooted into the
disk, ever follows them (a host-side unpack would follow them out; the container's tar can only reach
the container). `mke2fs -d` then copies the tree into the disk image without following links, and the
guest mounts it read-only, nosuid, nodev.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import posixpath
import secrets
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors

from hearth.engine import provided
from hearth.images import containers
from hearth.images import microvm as microvm_image

DISK_VERSION = 1
RELAY_DIR = provided.RELAY_MOUNT.lstrip("/")  # opt/hearth-relay
# The guest's init mounts its own file systems here (init.sh): whatever the image has there is dropped.
MOUNT_POINTS: dict[str, int] = {"hearth": 0o755, "tmp": 0o1777, "dev": 0o755, "proc": 0o555, RELAY_DIR: 0o755}
MAX_BYTES = 4 * 2**30  # an image's files, in all
MAX_ENTRIES = 1_000_000
UNPACK_TIMEOUT_S = 600
DISK_MAX_IDLE_S = 3 * 86400  # disks of images nobody ran for this long are removed


class FunctionDiskError(RuntimeError):
    pass


class _ChunkReader(io.RawIOBase):
    """A file object reading from an iterator of byte chunks (docker's export stream), for tarfile's stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            self._pending = next(self._chunks, b"")
            if not self._pending:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def safe_name(name: str) -> str | None:
    """The member's path relative to the image's root, or None when it is empty, absolute after `./`, or climbs out."""
    cleaned = posixpath.normpath(name.lstrip("/"))
    if cleaned in (".", "") or cleaned == ".." or cleaned.startswith("../"):
        return None
    return cleaned


def _under_mount_point(name: str) -> bool:
    return any(name == point or name.startswith(point + "/") for point in MOUNT_POINTS)


def filter_image(source: tarfile.TarFile, target: tarfile.TarFile, relay: Path) -> int:
    """Copy what a guest may see of an image's file system from `source` (a stream) to `target`; returns bytes."""
    total, entries = 0, 0
    files: set[str] = set()
    directories: set[str] = set()
    for member in source:
        entries += 1
        if entries > MAX_ENTRIES:
            raise FunctionDiskError(f"the image has more than {MAX_ENTRIES} files")
        name = safe_name(member.name)
        if name is None or _under_mount_point(name):
            continue
        if name == "opt" and not member.isdir():
            continue  # the relay's directory goes under /opt
        copy = tarfile.TarInfo(name)
        copy.uid, copy.gid, copy.mtime = member.uid, member.gid, int(member.mtime)
        copy.mode = member.mode & 0o1777  # no setuid / setgid
        if member.isdir():
            copy.type = tarfile.DIRTYPE
            directories.add(name)
            target.addfile(copy)
        elif member.issym():
            copy.type, copy.linkname = tarfile.SYMTYPE, member.linkname
            target.addfile(copy)
        elif member.islnk():
            linked = safe_name(member.linkname)
            if linked is None or linked not in files:
                continue
            copy.type, copy.linkname = tarfile.LNKTYPE, linked
            target.addfile(copy)
        elif member.isreg():
            total += member.size
            if total > MAX_BYTES:
                raise FunctionDiskError(f"the image's files are over {MAX_BYTES >> 30} GiB: too large for a VM disk")
            copy.size = member.size
            target.addfile(copy, source.extractfile(member))
            files.add(name)
        # device nodes, FIFOs and anything else: not in a function's file system
    for point, mode in [("opt", 0o755), *MOUNT_POINTS.items()]:
        if point not in directories:
            entry = tarfile.TarInfo(point)
            entry.type, entry.mode, entry.mtime = tarfile.DIRTYPE, mode, int(time.time())
            target.addfile(entry)
    binary = relay / "relay"
    entry = tarfile.TarInfo(f"{RELAY_DIR}/relay")
    entry.mode, entry.size, entry.mtime = 0o755, binary.stat().st_size, int(binary.stat().st_mtime)
    with open(binary, "rb") as data:
        target.addfile(entry, data)
    return total


class FunctionDisks:
    """The cache of function disks under <microVM cache>/function-disks, and the Docker client that feeds it."""

    def __init__(self, cache_dir: Path) -> None:
        self.root = cache_dir / "function-disks"
        self._client: docker.DockerClient | None = None
        self.configs: dict[str, provided.ImageConfig] = {}  # image functions' images, by the name they were run as

    @property
    def client(self) -> docker.DockerClient | None:
        if self._client is None:
            with contextlib.suppress(docker.errors.DockerException):
                self._client = docker.from_env()
        return self._client

    def image_config(self, ref: str) -> provided.ImageConfig:
        """An image function's image (a version pins it by id, so an id's configuration never changes)."""
        if (config := self.configs.get(ref)) is None:
            client = self._require_client()
            try:
                config = provided.inspect_image(client, ref)
            except provided.ProvidedError as exc:
                raise FunctionDiskError(str(exc)) from None
            self.configs[ref] = config
        return config

    def disk_for(self, image: str | None) -> Path:
        """The disk of an image function's image (its id or name), or of the `provided` runtime image (None)."""
        if image is None:
            ref = containers.image_ref(provided.LANGUAGE)
            client = self._require_client()
            try:
                image_id = str(client.api.inspect_image(ref)["Id"])
            except docker.errors.ImageNotFound:
                raise FunctionDiskError(f"the provided runtime image {ref} is not built: run `make images`") from None
        else:
            image_id = self.image_config(image).image_id
        relay = provided.ensure_relay()
        key = microvm_image.digest({"version": DISK_VERSION, "image": image_id, "relay": relay.name})
        if (found := self._find(key)) is None:
            with self._lock(key):
                if (found := self._find(key)) is None:
                    # Each build has a name of its own: snapshots of VMs that mounted a disk are keyed by its path,
                    # and a rebuilt disk (after a prune) is not the same file system as the one they cached.
                    found = self.root / f"{key}-{secrets.token_hex(4)}.ext4"
                    self._build(image_id, relay, found)
        with contextlib.suppress(OSError):
            os.utime(found)  # in use: kept by prune
        return found

    def _find(self, key: str) -> Path | None:
        return next(iter(sorted(self.root.glob(f"{key}-*.ext4"))), None)

    def prune(self, max_age_s: float = DISK_MAX_IDLE_S) -> None:
        now = time.time()
        for path in self.root.glob("*.ext4") if self.root.is_dir() else []:
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime > max_age_s:
                    path.unlink()

    def _require_client(self) -> docker.DockerClient:
        client = self.client
        if client is None:
            raise FunctionDiskError("custom runtimes on microVMs need the local Docker engine (their images are there)")
        return client

    @contextlib.contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / f".{key}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _build(self, image_id: str, relay: Path, target: Path) -> None:
        if os.geteuid() != 0:  # the unpacked tree belongs to the image's users: only root can read it into a disk
            raise FunctionDiskError("building a microVM function disk needs Hearth to run as root")
        client = self._require_client()
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=self.root))
        try:
            (work / "in").mkdir()
            (work / "out").mkdir(mode=0o755)
            self._export(client, image_id, work / "in" / "fs.tar", relay)
            self._unpack(client, work)
            partial = work / "disk.ext4"
            microvm_image.make_ext4(work / "out", partial, lambda _line: None, time.monotonic())
            partial.chmod(0o444)
            os.replace(partial, target)
        except microvm_image.GuestImageError as exc:
            raise FunctionDiskError(f"making the function disk failed: {exc}") from None
        finally:
            shutil.rmtree(work, ignore_errors=True)

    @staticmethod
    def _export(client: docker.DockerClient, image_id: str, tar_path: Path, relay: Path) -> None:
        """The image's file system, filtered (see the module's doc), into `tar_path`."""
        container = client.api.create_container(image_id, entrypoint=["/"], command=[], network_disabled=True)
        try:
            stream = _ChunkReader(iter(client.api.export(container["Id"])))
            with (
                tarfile.open(fileobj=stream, mode="r|") as source,
                tarfile.open(tar_path, "w", format=tarfile.GNU_FORMAT) as target,
            ):
                filter_image(source, target, relay)
        except (tarfile.TarError, docker.errors.APIError) as exc:
            raise FunctionDiskError(f"exporting image {image_id[:19]} failed: {exc}") from None
        finally:
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_container(container["Id"], force=True)

    @staticmethod
    def _unpack(client: docker.DockerClient, work: Path) -> None:
        """GNU tar, in a container of Hearth's `provided` image, unpacks the filtered copy into work/out."""
        host_config = client.api.create_host_config(
            binds={str(work / "in"): {"bind": "/in", "mode": "ro"}, str(work / "out"): {"bind": "/out", "mode": "rw"}},
            network_mode="none",
            read_only=True,
            cap_drop=["ALL"],
            cap_add=["CHOWN", "DAC_OVERRIDE", "FOWNER"],
            security_opt=["no-new-privileges:true"],
            mem_limit=256 * 2**20,
            pids_limit=16,
        )
        command = ["tar", "-x", "-p", "--numeric-owner", "--no-overwrite-dir", "-f", "/in/fs.tar", "-C", "/out"]
        container = client.api.create_container(
            containers.image_ref(provided.LANGUAGE), command=command, user="0:0", host_config=host_config
        )
        try:
            client.api.start(container["Id"])
            status = client.api.wait(container["Id"], timeout=UNPACK_TIMEOUT_S)
            if status.get("StatusCode") != 0:
                output = client.api.logs(container["Id"]).decode(errors="replace")[-1500:]
                raise FunctionDiskError(f"unpacking the image failed (exit {status.get('StatusCode')}): {output}")
        except docker.errors.DockerException as exc:
            raise FunctionDiskError(f"unpacking the image failed: {exc}") from None
        finally:
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_container(container["Id"], force=True)
