"""A sandbox's host directory (its agent socket and the function's code) is closed to other local users:
only root and the sandbox's group (nogroup) may enter it, so nobody else can connect to the agent socket
before the agent does, or read the code."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import docker
import pytest

from hearth.testing import HearthServer

OTHER_USER = 1000  # a local user that is neither root nor the sandboxes' nobody:nogroup
MARK = "sandbox-directory-mark-7f3a"


def sandbox_directory(client: docker.DockerClient, server: HearthServer, invocation_id: str) -> Path:
    """The host directory mounted at /hearth in the sandbox that served the invocation (named by its id)."""
    deadline = time.monotonic() + 30
    while (record := server.client.get(f"/api/invocations/{invocation_id}")).status_code == 404:
        assert time.monotonic() < deadline, "the invocation was never recorded"
        time.sleep(0.2)
    sandbox_id = record.json()["sandbox_id"]
    for container in client.containers.list(ignore_removed=True):
        for mount in container.attrs["Mounts"]:
            if mount["Destination"] == "/hearth" and Path(mount["Source"]).name == sandbox_id:
                return Path(mount["Source"])
    raise AssertionError(f"no running container of sandbox {sandbox_id}")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the directory's group is set only by root")
def test_other_local_users_cannot_enter_a_sandbox_directory(
    hearth: HearthServer, docker_client: docker.DockerClient, container_backend: str, fname: str
) -> None:
    hearth.deploy(fname, f"def handler(e, c):\n    return '{MARK}'\n", backend=container_backend)
    called = hearth.invoke(fname)
    assert called.json() == MARK  # the sandbox (nobody:nogroup) reads its code and reached the socket
    directory = sandbox_directory(docker_client, hearth, called.headers["X-Hearth-Invocation-Id"])
    info = directory.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o750, 65534), (oct(info.st_mode), info.st_gid)
    code = next(p for p in (directory / "code").rglob("*") if p.is_file() and MARK in p.read_text())
    for target in (["/bin/ls", str(directory)], ["/bin/cat", str(code)]):
        denied = subprocess.run(target, user=OTHER_USER, group=OTHER_USER, extra_groups=[], capture_output=True)
        assert denied.returncode != 0 and b"Permission denied" in denied.stderr, denied
    hearth.client.delete(f"/api/functions/{fname}")
