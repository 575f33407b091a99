"""The dependency build sandbox, checked from inside: probes run through the very function builds use.

Each probe is a BuildJob run by BuildSandbox.run in the Python builder image, as `pip install`
is; what the probe sees comes back in the build log.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from hearth.engine.backends.docker import materialize_code
from hearth.images import containers
from hearth.packaging.sandbox import BuildJob, BuildLimits, BuildSandbox, SandboxFailed

SECRET = "hearth-secret-" + os.urandom(6).hex()
OWNER = "test-build-sandbox"

PROBE = r"""
import json, os, socket, sys
out = {"uid": os.getuid(), "gid": os.getgid(), "env": dict(os.environ)}
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
out["cap_eff"] = status["CapEff"].strip()
out["no_new_privs"] = status["NoNewPrivs"].strip()
out["seen"] = {path: os.path.exists(path) for path in sys.argv[2:]}
def write(path):
    try:
        open(path, "w").write("x")
        return "written"
    except OSError as exc:
        return type(exc).__name__
out["write_root"] = write("/probe")
out["write_mount"] = write("/hearth/probe")
out["write_scratch"] = write("/build/probe")
def connect(host, port):
    try:
        socket.create_connection((host, port), timeout=5).close()
        return "connected"
    except OSError as exc:
        return type(exc).__name__
port = int(sys.argv[1])
out["loopback_direct"] = connect("127.0.0.1", port)
out["outside_direct"] = connect("192.0.2.1", 443)
proxy = socket.create_connection(("127.0.0.1", 3128), timeout=10)
proxy.sendall(("CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % port).encode())
out["loopback_via_proxy"] = proxy.recv(200).decode().split("\r\n")[0]
out["interfaces"] = sorted(name for _, name in socket.if_nameindex())
print("PROBE " + json.dumps(out), flush=True)
"""


@pytest.fixture(scope="module")
def client(runtime_images: dict[str, str]) -> docker.DockerClient:
    return docker.from_env()


@pytest.fixture
def loopback_service() -> Iterator[int]:
    """A service on the host's loopback standing for Hearth's API and /metrics: it serves the secret."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(SECRET.encode())

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def sandbox(client: docker.DockerClient, **limits: float) -> BuildSandbox:
    return BuildSandbox(lambda: client, BuildLimits(**limits), OWNER)  # type: ignore[arg-type]


def run(box: BuildSandbox, job: BuildJob, dest: Path | None = None) -> str:
    lines: list[str] = []
    asyncio.run(box.run(job, lines.append, dest=dest, name="probe"))
    return "".join(lines)


def job(command: list[str], **kwargs: object) -> BuildJob:
    return BuildJob(
        image=containers.builder_ref("python"),
        command=command,
        env={},
        files={"requirements.txt": b"six\n"},
        hosts={("pypi.org", 443)},
        **kwargs,  # type: ignore[arg-type]
    )


def leftover_containers(client: docker.DockerClient) -> list[str]:
    return [c.name for c in client.containers.list(all=True, filters={"label": f"hearth.owner={OWNER}"})]


def test_a_build_sees_none_of_the_server_and_reaches_only_the_index(
    client: docker.DockerClient, loopback_service: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEARTH_API_KEY", SECRET)  # as in the server's environment
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "api_key").write_text(SECRET)
    paths = [str(data_dir), str(data_dir / "api_key"), "/var/run/docker.sock", "/run/docker.sock", __file__]
    log = run(sandbox(client), job(["python3", "-c", PROBE, str(loopback_service), *paths]))
    assert SECRET not in log
    probe = json.loads(log.split("PROBE ", 1)[1].splitlines()[0])
    assert (probe["uid"], probe["gid"]) == (65534, 65534)
    assert int(probe["cap_eff"], 16) == 0 and probe["no_new_privs"] == "1"
    assert not any(key.startswith("HEARTH") for key in probe["env"])
    assert set(probe["env"]) <= {
        "PATH",
        "LANG",
        "HOME",
        "TMPDIR",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "LC_CTYPE",
        "HOSTNAME",  # set by Docker: the container id
    }
    assert probe["seen"] == dict.fromkeys(paths, False)
    assert probe["write_root"] == "OSError" and probe["write_mount"] == "OSError"
    assert probe["write_scratch"] == "written"
    assert probe["interfaces"] == ["lo"]  # no route anywhere: the container's own loopback only
    assert probe["loopback_direct"] == "ConnectionRefusedError"  # the host's loopback is not this one
    assert probe["outside_direct"] == "OSError"  # network unreachable
    assert probe["loopback_via_proxy"] == "HTTP/1.1 403 Forbidden"
    assert f"refused CONNECT 127.0.0.1:{loopback_service}" in log
    assert leftover_containers(client) == []


def test_a_build_over_its_time_is_killed_and_leaves_nothing(client: docker.DockerClient, tmp_path: Path) -> None:
    dest = tmp_path / "layer"
    with pytest.raises(SandboxFailed, match="did not finish within 3 s"):
        run(sandbox(client, timeout_s=3), job(["sleep", "600"], output="/build/out"), dest)
    assert not dest.exists()
    assert leftover_containers(client) == []


def test_a_failed_build_leaves_nothing(client: docker.DockerClient, tmp_path: Path) -> None:
    dest = tmp_path / "layer"
    with pytest.raises(SandboxFailed, match="probe failed with exit code 3"):
        run(
            sandbox(client),
            job(["sh", "-c", "mkdir -p /build/out && touch /build/out/x && exit 3"], output="/build/out"),
            dest,
        )
    assert not dest.exists()
    assert leftover_containers(client) == []


def test_a_build_cannot_write_more_than_its_disk_limit(client: docker.DockerClient, tmp_path: Path) -> None:
    dest = tmp_path / "layer"
    fill = "mkdir -p /build/out && head -c 64000000 /dev/zero > /build/out/big"
    with pytest.raises(SandboxFailed, match="exit code 1"):
        run(sandbox(client, disk_mb=16), job(["sh", "-c", fill], output="/build/out"), dest)
    assert not dest.exists()
    assert leftover_containers(client) == []


def test_output_comes_back_with_links_as_links_and_none_leading_out(
    client: docker.DockerClient, tmp_path: Path
) -> None:
    make = "mkdir -p /build/out/pkg && echo hi > /build/out/pkg/a.txt && ln -s pkg/a.txt /build/out/link"
    dest = tmp_path / "layer"
    run(sandbox(client), job(["sh", "-c", make], output="/build/out"), dest)
    assert (dest / "pkg" / "a.txt").read_text() == "hi\n"
    assert (dest / "link").is_symlink() and os.readlink(dest / "link") == "pkg/a.txt"

    for target in ("/etc/passwd", "../../../../../etc/passwd"):
        escaping = tmp_path / f"escaping-{len(target)}"
        with pytest.raises(SandboxFailed, match="cannot be unpacked"):
            run(
                sandbox(client),
                job(["sh", "-c", f"mkdir -p /build/out && ln -s {target} /build/out/x"], output="/build/out"),
                escaping,
            )
    assert leftover_containers(client) == []


def test_code_and_layers_are_copied_without_following_links(tmp_path: Path) -> None:
    secret = tmp_path / "host-secret"
    secret.write_text(SECRET)
    os.chmod(secret, 0o600)
    layer = tmp_path / "layer"
    layer.mkdir()
    (layer / "mod.py").write_text("x = 1\n")
    (layer / "leak").symlink_to(secret)
    target = tmp_path / "sandbox" / "deps"
    materialize_code(layer, target)
    assert (target / "leak").is_symlink() and (target / "mod.py").read_text() == "x = 1\n"
    assert secret.stat().st_mode & 0o777 == 0o600  # not made world-readable through the link


def test_a_cancelled_build_leaves_nothing(client: docker.DockerClient, tmp_path: Path) -> None:
    """A deploy whose client went away, or a server shutting down, cancels the build mid-way."""
    dest = tmp_path / "layer"

    async def cancel_once_running() -> None:
        task = asyncio.create_task(
            sandbox(client).run(job(["sleep", "600"], output="/build/out"), lambda _line: None, dest, "probe")
        )
        while not leftover_containers(client):
            await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_once_running())
    assert not dest.exists()
    assert leftover_containers(client) == []


def test_a_missing_builder_image_is_a_clear_failure(client: docker.DockerClient) -> None:
    missing = BuildJob(image="hearth-builder-python:no-such-tag", command=["true"], env={}, files={}, hosts=set())
    with pytest.raises(SandboxFailed, match="builder image hearth-builder-python:no-such-tag is missing"):
        run(sandbox(client), missing)
    assert leftover_containers(client) == []
