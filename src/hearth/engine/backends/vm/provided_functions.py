"""Custom runtimes (language `provided`) and image functions on the microVM backends (QEMU, Firecracker).

A `provided` VM boots the same kernel, initramfs and root disk as the other runtimes, plus a second
read-only disk holding the function's file system and Hearth's relay (disks.py): Hearth's
`provided` runtime image for zip functions (shared by all of them, so they have snapshots and stem
cells), the function's own image for image functions (a snapshot per image). In the guest, init mounts
that disk with the VM's /tmp, /dev, /proc and /hearth, and the supervisor starts the relay chrooted
into it as nobody (init.sh, launch.sh). The relay reaches the host over the VM's agent
transport like the other agents, writes the function's code from the init frame's `files`, and starts
the bootstrap (or the image's ENTRYPOINT + CMD) at load, exactly as in a container (docs/runtimes.md).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from hearth.engine import provided
from hearth.engine.backends.vm.disks import FunctionDiskError, FunctionDisks
from hearth.engine.sandbox import FunctionSpec, SandboxStartError


async def function_disk(disks: FunctionDisks, image: str | None) -> tuple[str, provided.ImageConfig | None]:
    """The disk a `provided` VM starts with, and the image function's image (None for a zip function)."""
    try:
        config = await asyncio.to_thread(disks.image_config, image) if image else None
        disk = await asyncio.to_thread(disks.disk_for, image)
    except (FunctionDiskError, provided.ProvidedError) as exc:
        raise SandboxStartError(str(exc)) from None
    return str(disk), config


def refusal() -> str | None:
    """Why this host's microVMs cannot run custom runtimes, or None (checked at deploy)."""
    if os.geteuid() != 0:
        return (
            "custom runtimes and image functions on the microVM backends need Hearth to run as root: their disks are "
            "built from the images' files, which belong to the images' users; use the docker or gvisor backend"
        )
    return None


def qemu_drive(disk: str) -> list[str]:
    return [
        "-drive", f"id=fn,file={disk},format=raw,if=none,readonly=on",
        "-device", "virtio-blk-device,drive=fn",
    ]  # fmt: skip


def init_fields(spec: FunctionSpec, frame: dict[str, Any], image: provided.ImageConfig | None) -> dict[str, Any]:
    """What the relay's init frame holds beyond the common fields, as in containers (hearth.engine.provided).

    A VM's relay gets no environment from the image (a container's processes get the image's ENV from
    Docker): the image's variables come first in `env`, Lambda's and the function's own win over them.
    A bundle's files are all executable, as materialized for containers.
    """
    fields = provided.init_fields(spec, frame, image)
    if image is not None:
        fields["env"] = {**image.env, **fields["env"]}
    for item in frame.get("files") or []:
        item["mode"] = 0o755
    return fields
