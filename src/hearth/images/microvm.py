"""The microVM guest image, built from Debian's packages and cached by a hash of its recipe.

A guest is three files (docs/isolation.md):

- `vmlinux`: Debian's `linux-image-cloud-amd64` kernel, decompressed (QEMU's microvm and Firecracker
  both boot an uncompressed ELF kernel, and under TCG it boots faster than the bzImage);
- `rootfs.ext4`: a read-only root (mmdebstrap's essential variant plus python3 and nodejs, the same
  packages as the container images), attached as a virtio-blk disk and shared by every VM;
- an initramfs (assembled in a second, cheap step, so that an agent change does not rebuild the
  root): busybox-static, the virtio modules the cloud kernel ships as modules (virtio-mmio,
  virtio-blk, virtio-console, virtio-rng, vsock), `init.sh` as /init, and what init bind-mounts
  read-only into the root at /opt/hearth: Hearth's agents, `supervisor.py` and
  `launch.sh` (the guest's programs live in hearth/engine/backends/vm, beside the backend that
  talks to them; this module only packs them).

Nothing names a mirror: mmdebstrap is given the host's apt sources file, read at build time. The
cache lives outside the repository (`HEARTH_MICROVM_CACHE_DIR`, else /var/cache/hearth/microvm for
root, else ~/.cache/hearth/microvm); a build goes to a temporary directory renamed into place, under
a lock, so concurrent builders never see half an image.

`python -m hearth.images.microvm [--force]` (or `make microvm-image`) builds it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hearth.images import debian, locks
from hearth.images.debian import ImageBuildError, Progress, host_sources, host_suite

RECIPE_VERSION = 1
KERNEL_PACKAGE = "linux-image-cloud-amd64"
ROOT_PACKAGES: tuple[str, ...] = ("python3", "nodejs")
BOOT_PACKAGES: tuple[str, ...] = (KERNEL_PACKAGE, "busybox-static")
# Loaded by /init in this order after their dependencies (read from each module's .modinfo).
MODULES: tuple[str, ...] = (
    "virtio_mmio",
    "virtio_blk",
    "virtio_console",
    "virtio_rng",
    "vmw_vsock_virtio_transport",
)
ROOT_CUSTOMIZE: tuple[str, ...] = (
    *debian.CLEAN,
    # mount points: the agents (from the initramfs), the function's code and dependencies (tmpfs)
    'mkdir -p "$1"/opt/hearth "$1"/hearth "$1"/dev "$1"/proc "$1"/tmp',
)
# Host tools -> Debian package: mmdebstrap's, and those that make the root file system and the kernel.
HOST_TOOLS = {**debian.HOST_TOOLS, "mke2fs": "e2fsprogs", "lz4": "lz4"}
LZ4_MAGIC = b"\x02\x21\x4c\x18"  # the legacy LZ4 frame the kernel's decompressor uses
RUNTIMES_DIR = Path(__file__).resolve().parents[1] / "runtimes"
# The guest's own programs live beside the backend that talks to them.
GUEST_DIR = Path(__file__).resolve().parents[1] / "engine" / "backends" / "vm"
INIT_SCRIPT = GUEST_DIR / "init.sh"
LAUNCH_SCRIPT = GUEST_DIR / "launch.sh"
SUPERVISOR = GUEST_DIR / "supervisor.py"


class GuestImageError(ImageBuildError):
    pass


def default_cache_dir() -> Path:
    configured = os.environ.get("HEARTH_MICROVM_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    if os.geteuid() == 0:
        return Path("/var/cache/hearth/microvm")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hearth" / "microvm"


# ---------------------------------------------------------------------------------------------- recipe


def recipe() -> dict[str, Any]:
    """Everything that determines the image's content; its hash names the cache entry."""
    return {
        "version": RECIPE_VERSION,
        "suite": host_suite(),
        "boot_packages": list(BOOT_PACKAGES),
        "root": {
            "variant": "essential",
            "packages": list(ROOT_PACKAGES),
            "hooks": list(debian.HOOKS),
            "path_exclude": list(debian.TRIMMED),
            "customize": list(ROOT_CUSTOMIZE),
            "filesystem": "ext4 read-only, no journal",
        },
        "modules": list(MODULES),
    }


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class GuestImage:
    """A built image in the cache."""

    directory: Path

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinux"

    @property
    def rootfs(self) -> Path:
        return self.directory / "rootfs.ext4"

    @property
    def busybox(self) -> Path:
        return self.directory / "busybox"

    @property
    def modules_dir(self) -> Path:
        return self.directory / "modules"

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads((self.directory / "manifest.json").read_text())  # type: ignore[no-any-return]

    @property
    def key(self) -> str:
        return self.directory.name

    def complete(self) -> bool:
        return all(p.exists() for p in (self.kernel, self.rootfs, self.busybox, self.directory / "manifest.json"))


def image_dir(cache_dir: Path | None = None) -> Path:
    return (cache_dir or default_cache_dir()) / "images" / digest(recipe())


def find_image(cache_dir: Path | None = None) -> GuestImage | None:
    """The image of the current recipe if it is built, else None."""
    image = GuestImage(image_dir(cache_dir))
    return image if image.complete() else None


# ----------------------------------------------------------------------------------------------- build


def _run_logged(command: list[str], say: Progress, label: str, started: float) -> None:
    """Run a build step, forwarding its output as progress lines; raise with its tail on failure."""
    tail: deque[str] = deque(maxlen=debian.TAIL_LINES)
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=debian.system_env(),
        start_new_session=True,  # mmdebstrap signals its whole process group on failure
    )
    assert proc.stdout is not None
    try:
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line:
                tail.append(line)
                say(f"[microvm] {time.monotonic() - started:5.1f}s {label}: {line}")
    except BaseException:
        proc.terminate()
        proc.wait()
        raise
    if proc.wait() != 0:
        raise GuestImageError(f"{label} failed (exit {proc.returncode}):\n" + "\n".join(tail))


def mmdebstrap_boot_command(spec: dict[str, Any], target: Path, sources: Path) -> list[str]:
    """The kernel and busybox, only unpacked (variant extract): nothing of it is installed or run."""
    return debian.mmdebstrap_command(
        suite=spec["suite"],
        variant="extract",
        packages=spec["boot_packages"],
        output_format="directory",
        target=str(target),
        sources=sources,
    )


def mmdebstrap_root_command(spec: dict[str, Any], target: Path, sources: Path) -> list[str]:
    root = spec["root"]
    return debian.mmdebstrap_command(
        suite=spec["suite"],
        variant=root["variant"],
        packages=root["packages"],
        hooks=root["hooks"],
        path_exclude=root["path_exclude"],
        customize=root["customize"],
        output_format="directory",
        target=str(target),
        sources=sources,
    )


def extract_vmlinux(vmlinuz: Path, target: Path) -> None:
    """Debian's x86 bzImage carries an LZ4-compressed kernel: cut at the LZ4 magic and decompress it."""
    data = vmlinuz.read_bytes()
    at = data.find(LZ4_MAGIC)
    if at < 0:
        raise GuestImageError(f"{vmlinuz.name}: no LZ4 payload found (not a Debian amd64 kernel?)")
    done = subprocess.run(["lz4", "-dc"], input=data[at:], capture_output=True, env=debian.system_env())
    # lz4 complains about the bytes after the payload (the bzImage's trailer); the kernel is complete.
    if not done.stdout.startswith(b"\x7fELF"):
        raise GuestImageError(f"decompressing {vmlinuz.name} gave no ELF kernel: {done.stderr.decode()[-300:]}")
    target.write_bytes(done.stdout)


def module_index(modules_root: Path) -> dict[str, Path]:
    """Module name (dashes as underscores) -> .ko file."""
    index: dict[str, Path] = {}
    for path in modules_root.rglob("*.ko*"):
        name = path.name.split(".ko")[0].replace("-", "_")
        index[name] = path
    return index


def module_depends(path: Path) -> list[str]:
    """The `depends=` entry of a module's .modinfo section."""
    if path.suffix != ".ko":
        raise GuestImageError(f"{path.name}: compressed modules are not supported (busybox insmod needs .ko)")
    match = re.search(rb"(?:^|\x00)depends=([^\x00]*)\x00", path.read_bytes())
    if not match or not match.group(1):
        return []
    return [name.replace("-", "_") for name in match.group(1).decode().split(",") if name]


def resolve_modules(index: dict[str, Path], wanted: tuple[str, ...]) -> list[str]:
    """`wanted` and their dependencies, each after what it depends on."""
    order: list[str] = []

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in trail:
            raise GuestImageError(f"module dependency cycle: {' -> '.join((*trail, name))}")
        if name not in index:
            raise GuestImageError(f"kernel module {name} not found (built in? check the kernel config)")
        for dep in module_depends(index[name]):
            visit(dep, (*trail, name))
        order.append(name)

    for name in wanted:
        visit(name, ())
    return order


def _package_versions(root: Path, names: tuple[str, ...]) -> dict[str, str]:
    """Installed versions from the image's dpkg status file."""
    versions: dict[str, str] = {}
    try:
        status = (root / "var/lib/dpkg/status").read_text()
    except OSError:
        return versions
    for block in status.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(" "))
        if fields.get("Package") in names and "installed" in fields.get("Status", ""):
            versions[fields["Package"]] = fields.get("Version", "")
    return versions


def _tree_size(root: Path) -> tuple[int, int]:
    """(bytes, inodes) of a directory tree, not following symlinks."""
    total, inodes = 0, 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            inodes += 1
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, name))
                total += st.st_blocks * 512 if stat.S_ISREG(st.st_mode) else 4096 * stat.S_ISDIR(st.st_mode)
        del dirpath
    return total, inodes


def make_ext4(tree: Path, image: Path, say: Progress, started: float) -> None:
    used, inodes = _tree_size(tree)
    size_mb = int(used * 1.1 / 2**20) + 32
    command = [
        "mke2fs", "-q", "-F", "-t", "ext4", "-L", "hearth-root",
        "-O", "^has_journal,^resize_inode", "-m", "0", "-N", str(inodes + 2048),
        "-E", "root_owner=0:0", "-d", str(tree), str(image), f"{size_mb}M",
    ]  # fmt: skip
    _run_logged(command, say, "mke2fs", started)


def build_image(cache_dir: Path | None = None, progress: Progress | None = None) -> GuestImage:
    """Build the current recipe's image now (no cache check) and move it into the cache."""
    say = progress or (lambda _line: None)
    spec = recipe()
    target = image_dir(cache_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    say(f"[microvm] building guest image {target.name} from Debian {spec['suite']} packages")
    debian.ensure_host_tools(HOST_TOOLS, say, "`make microvm-image` or `python -m hearth.images.microvm`")
    sources = host_sources()
    work = Path(tempfile.mkdtemp(prefix=f".build-{target.name}-", dir=target.parent))
    try:
        out = work / "image"
        out.mkdir()
        boot = work / "boot"
        say(f"[microvm] {time.monotonic() - started:5.1f}s kernel and busybox ({', '.join(BOOT_PACKAGES)})")
        _run_logged(mmdebstrap_boot_command(spec, boot, sources), say, "mmdebstrap boot", started)
        kernels = sorted(boot.glob("boot/vmlinuz-*"))
        if not kernels:
            raise GuestImageError(f"{KERNEL_PACKAGE} gave no /boot/vmlinuz-*")
        vmlinuz = kernels[-1]
        release = vmlinuz.name.removeprefix("vmlinuz-")
        extract_vmlinux(vmlinuz, out / "vmlinux")
        candidates = (boot / "lib/modules" / release, boot / "usr/lib/modules" / release)
        modules_root = next((p for p in candidates if p.is_dir()), None)
        if modules_root is None:
            raise GuestImageError(f"no modules directory for kernel {release}")
        index = module_index(modules_root)
        order = resolve_modules(index, MODULES)
        (out / "modules").mkdir()
        for name in order:
            shutil.copy2(index[name], out / "modules" / f"{name}.ko")
        (out / "modules" / "order").write_text("\n".join(order) + "\n")
        busybox = next((p for p in (boot / "bin/busybox", boot / "usr/bin/busybox") if p.exists()), None)
        if busybox is None:
            raise GuestImageError("busybox-static gave no busybox binary")
        shutil.copy2(busybox, out / "busybox")
        boot_versions = _package_versions(boot, ("busybox-static", f"linux-image-{release}"))
        shutil.rmtree(boot)
        say(f"[microvm] {time.monotonic() - started:5.1f}s kernel {release}, modules: {' '.join(order)}")

        root = work / "root"
        say(f"[microvm] {time.monotonic() - started:5.1f}s root file system ({', '.join(ROOT_PACKAGES)})")
        _run_logged(mmdebstrap_root_command(spec, root, sources), say, "mmdebstrap root", started)
        root_versions = _package_versions(root, ROOT_PACKAGES)
        for needed in ("usr/bin/python3", "usr/bin/node", "usr/bin/setpriv", "bin/sh"):
            if not (root / needed).exists() and not (root / needed).is_symlink():
                raise GuestImageError(f"the root file system has no /{needed}")
        make_ext4(root, out / "rootfs.ext4", say, started)
        shutil.rmtree(root)

        manifest = {
            "recipe": spec,
            "kernel_release": release,
            "packages": {**boot_versions, **root_versions},
            "modules": order,
            "sizes": {p.name: p.stat().st_size for p in (out / "vmlinux", out / "rootfs.ext4", out / "busybox")},
            "built_at": time.time(),
            "build_seconds": round(time.monotonic() - started, 1),
        }
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        for path in out.rglob("*"):
            if path.is_file():
                path.chmod(0o444)
        out.chmod(0o755)
        if target.exists():  # a forced rebuild
            shutil.rmtree(target)
        out.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rootfs_mb = (target / "rootfs.ext4").stat().st_size / 2**20
    say(f"[microvm] {time.monotonic() - started:5.1f}s built {target} (root file system {rootfs_mb:.0f} MiB)")
    return GuestImage(target)


def ensure_image(cache_dir: Path | None = None, progress: Progress | None = None, force: bool = False) -> GuestImage:
    """The current recipe's image, built first if it is not in the cache."""
    cache = cache_dir or default_cache_dir()
    if not force and (image := find_image(cache)):
        return image
    with locks.exclusive(cache / "locks" / "image.lock"):
        if not force and (image := find_image(cache)):
            return image
        return build_image(cache, progress)


# ------------------------------------------------------------------------------------------- initramfs


def _cpio_entry(name: str, mode: int, data: bytes = b"", ino: int = 0) -> bytes:
    """One record of the `newc` cpio format the kernel unpacks."""
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
    header = b"070701" + b"".join(f"{value:08X}".encode() for value in fields)
    body = header + name.encode() + b"\x00"
    body += b"\x00" * (-len(body) % 4)
    body += data + b"\x00" * (-len(data) % 4)
    return body


def initramfs_files(image: GuestImage) -> list[tuple[str, int, bytes]]:
    """(path, mode, content) of everything in the initramfs; directories have empty content."""
    files: list[tuple[str, int, bytes]] = []
    directories = ("bin", "dev", "lib", "lib/modules", "opt", "opt/hearth", "opt/hearth/python")
    directories += ("opt/hearth/javascript",)
    files += [(directory, stat.S_IFDIR | 0o755, b"") for directory in directories]
    files.append(("init", stat.S_IFREG | 0o755, INIT_SCRIPT.read_bytes()))
    files.append(("bin/busybox", stat.S_IFREG | 0o755, image.busybox.read_bytes()))
    order = (image.modules_dir / "order").read_text()
    files.append(("lib/modules/order", stat.S_IFREG | 0o644, order.encode()))
    for name in order.split():
        files.append((f"lib/modules/{name}.ko", stat.S_IFREG | 0o644, (image.modules_dir / f"{name}.ko").read_bytes()))
    files.append(("opt/hearth/launch.sh", stat.S_IFREG | 0o755, LAUNCH_SCRIPT.read_bytes()))
    files.append(("opt/hearth/supervisor.py", stat.S_IFREG | 0o644, SUPERVISOR.read_bytes()))
    files.append(("opt/hearth/python/agent.py", stat.S_IFREG | 0o644, (RUNTIMES_DIR / "python/agent.py").read_bytes()))
    agent_js = (RUNTIMES_DIR / "javascript/agent.js").read_bytes()
    files.append(("opt/hearth/javascript/agent.js", stat.S_IFREG | 0o644, agent_js))
    return files


def initramfs_key(image: GuestImage) -> str:
    hasher = hashlib.sha256(image.key.encode())
    for path, mode, data in initramfs_files(image):
        hasher.update(f"{path}\0{mode}\0{len(data)}\0".encode())
        hasher.update(hashlib.sha256(data).digest())
    return hasher.hexdigest()[:16]


def ensure_initramfs(image: GuestImage, cache_dir: Path | None = None) -> Path:
    """The initramfs for `image` and the current agents/init (uncompressed: no decompression at boot)."""
    cache = cache_dir or image.directory.parent.parent
    target = cache / "initramfs" / f"{initramfs_key(image)}.cpio"
    if target.exists():
        with contextlib.suppress(OSError):
            os.utime(target)  # in use: kept by prune_initramfs
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    for ino, (path, mode, data) in enumerate(initramfs_files(image), start=1):
        buffer.write(_cpio_entry(path, mode, data, ino))
    buffer.write(_cpio_entry("TRAILER!!!", 0))
    fd, tmp = tempfile.mkstemp(prefix=".initramfs-", dir=target.parent)
    with os.fdopen(fd, "wb") as handle:
        handle.write(buffer.getvalue())
    os.chmod(tmp, 0o444)
    os.replace(tmp, target)
    return target


def prune_initramfs(cache_dir: Path, max_age_s: float) -> None:
    """Remove initramfs files not used for `max_age_s` (built for agents or init scripts since changed)."""
    now = time.time()
    for path in (cache_dir / "initramfs").glob("*.cpio"):
        with contextlib.suppress(OSError):
            if now - path.stat().st_mtime > max_age_s:
                path.unlink()


# ------------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build Hearth's microVM guest image from Debian packages.")
    parser.add_argument("--force", action="store_true", help="rebuild even if the cache has it")
    parser.add_argument("--cache-dir", type=Path, default=None, help=f"default: {default_cache_dir()}")
    parser.add_argument("--print-dir", action="store_true", help="only print where the image is (or would be)")
    args = parser.parse_args(argv)
    cache = args.cache_dir or default_cache_dir()
    if args.print_dir:
        print(image_dir(cache))
        return 0

    def say(line: str) -> None:
        print(line, flush=True)

    started = time.monotonic()
    try:
        image = ensure_image(cache, say, force=args.force)
        initramfs = ensure_initramfs(image, cache)
    except ImageBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    manifest = image.manifest
    say(
        f"[microvm] guest image ready in {time.monotonic() - started:.1f}s: {image.directory} "
        f"(kernel {manifest['kernel_release']}, {', '.join(f'{k} {v}' for k, v in manifest['packages'].items())}); "
        f"initramfs {initramfs} ({initramfs.stat().st_size / 2**20:.1f} MiB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
