"""Container-image functions: images whose entrypoint speaks the Lambda Runtime API, as Lambda images do.

AWS's `awslambdaric` (PyPI) in an image built from a Dockerfile with `--network none`, deployed through
the function API, with `hearth deploy` (the CLI builds the Dockerfile) and with boto3's
`create_function(PackageType="Image")`; a FROM-scratch image holding only a static Go binary.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from hearth.testing import REPO, HearthServer

pytestmark = pytest.mark.usefixtures("provided_images")
boto3 = pytest.importorskip("boto3")


def deploy_image(server: HearthServer, name: str, image: str, **settings: Any) -> dict[str, Any]:
    body = {"name": name, "language": "provided", "image": image, **settings}
    response = server.client.post("/api/functions", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def invocation_record(server: HearthServer, invocation_id: str, timeout_s: float = 10) -> dict[str, Any]:
    """The stored record of an invocation (written shortly after it ends)."""
    deadline = time.monotonic() + timeout_s
    while (response := server.client.get(f"/api/invocations/{invocation_id}")).status_code != 200:
        assert time.monotonic() < deadline, response.text
        time.sleep(0.1)
    return dict(response.json())


def containers_of(client: docker.DockerClient, name: str) -> list[Any]:
    return client.containers.list(filters={"label": f"hearth.function={name}"})


@pytest.mark.parametrize("backend", ["docker", "gvisor"], indirect=True)
def test_awslambdaric_image(
    hearth: HearthServer, fname: str, ric_image: str, backend: str, docker_client: docker.DockerClient
) -> None:
    fn = deploy_image(hearth, fname, ric_image, backend=backend, timeout_s=2)
    assert fn["image"] == ric_image and fn["image_id"].startswith("sha256:")
    reply = hearth.invoke(fname, {"n": 1})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["event"] == {"n": 1} and body["request_id"] == reply.headers["x-hearth-invocation-id"]
    assert body["name"] == fname and body["remaining_ok"] and body["uid"] == 65534
    assert body["arn"].endswith(f":function:{fname}")

    failed = hearth.invoke(fname, {"fail": True})
    assert failed.status_code == 500
    assert (failed.json()["error"]["type"], failed.json()["error"]["message"]) == ("ValueError", "asked to fail")

    # Same confinement as every function: user, read-only root, no capabilities, no network.
    [container] = containers_of(docker_client, fname)
    host = container.attrs["HostConfig"]
    assert container.attrs["Config"]["User"] == "65534:65534"
    assert host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"] and host["NetworkMode"] == "none"
    assert host["Memory"] == 128 * 1024 * 1024

    slow = hearth.invoke(fname, {"sleep": 10})
    assert slow.status_code == 504
    assert hearth.invoke(fname, {"n": 2}).status_code == 200  # a fresh sandbox after the timeout


def test_scratch_image_with_a_static_go_runtime(
    hearth: HearthServer, fname: str, go_runtime: bytes, docker_build: Callable[[Path, str], str], tmp_path: Path
) -> None:
    (tmp_path / "bootstrap").write_bytes(go_runtime)
    (tmp_path / "bootstrap").chmod(0o755)
    (tmp_path / "Dockerfile").write_text('FROM scratch\nCOPY bootstrap /bootstrap\nENTRYPOINT ["/bootstrap"]\n')
    image = docker_build(tmp_path, "hearth-test-scratch:1")
    try:
        deploy_image(hearth, fname, image)
        reply = hearth.invoke(fname, {"n": 1})
        assert reply.status_code == 200, reply.text
        assert reply.json()["env"]["LAMBDA_TASK_ROOT"] == "/"
        assert hearth.invoke(fname, {"error": True}).json()["error"]["type"] == "GoError"
    finally:
        hearth.client.delete(f"/api/functions/{fname}")


def test_images_refused_at_deploy(
    hearth: HearthServer, fname: str, docker_build: Callable[[Path, str], str], tmp_path: Path
) -> None:
    missing = hearth.client.post(
        "/api/functions", json={"name": fname, "language": "provided", "image": "hearth-test-absent:nope"}
    )
    assert missing.status_code == 422 and "not in this host's Docker engine" in missing.text

    (tmp_path / "Dockerfile").write_text('FROM scratch\nUSER root\nENTRYPOINT ["/bootstrap"]\n')
    root_image = docker_build(tmp_path, "hearth-test-root:1")
    as_root = hearth.client.post("/api/functions", json={"name": fname, "language": "provided", "image": root_image})
    assert as_root.status_code == 422 and "USER root" in as_root.text


def test_boto3_create_function_with_an_image(hearth: HearthServer, fname: str, ric_image: str) -> None:
    aws = boto3.client(
        "lambda",
        endpoint_url=hearth.base_url,
        region_name="eu-west-1",
        aws_access_key_id="hearth",
        aws_secret_access_key=hearth.api_key,
    )
    created = aws.create_function(
        FunctionName=fname, PackageType="Image", Code={"ImageUri": ric_image}, Role="arn:aws:iam::1:role/x"
    )
    assert created["PackageType"] == "Image" and "Runtime" not in created
    result = aws.invoke(FunctionName=fname, Payload=b'{"via": "boto3"}')
    assert "FunctionError" not in result, result
    assert json.loads(result["Payload"].read())["event"] == {"via": "boto3"}
    failed = aws.invoke(FunctionName=fname, Payload=b'{"fail": true}')
    assert failed["FunctionError"] == "Unhandled"
    assert json.loads(failed["Payload"].read())["errorType"] == "ValueError"
    assert aws.get_function_configuration(FunctionName=fname)["PackageType"] == "Image"
    assert aws.get_function(FunctionName=fname)["Code"]["ImageUri"] == ric_image


def test_hearth_deploy_builds_the_dockerfile(
    hearth: HearthServer, fname: str, ric_context: Path, tmp_path: Path
) -> None:
    project = tmp_path / fname
    shutil.copytree(ric_context, project)
    (project / "hearth.toml").write_text(f'name = "{fname}"\nlanguage = "provided"\ntimeout_s = 5\n')
    env = {**os.environ, "HEARTH_API_URL": hearth.base_url, "HEARTH_API_KEY": hearth.api_key, "COLUMNS": "200"}
    run = [sys.executable, "-m", "hearth.cli"]
    deployed = subprocess.run([*run, "deploy", str(project)], env=env, capture_output=True, text=True, cwd=REPO)
    assert deployed.returncode == 0, deployed.stderr
    assert f"hearth-fn-{fname}:" in deployed.stderr
    invoked = subprocess.run(
        [*run, "invoke", fname, "--data", '{"who": "cli"}'], env=env, capture_output=True, text=True, cwd=REPO
    )
    assert invoked.returncode == 0, invoked.stderr
    assert '"who": "cli"' in invoked.stdout or '"who":"cli"' in invoked.stdout
    listed = subprocess.run([*run, "ls"], env=env, capture_output=True, text=True, cwd=REPO)
    assert f"image hearth-fn-{fname}:" in listed.stdout, listed.stdout
    tag = hearth.client.get(f"/api/functions/{fname}").json()["image"]
    hearth.client.delete(f"/api/functions/{fname}")
    for _ in range(50):  # this session's image, once its sandbox is gone
        if subprocess.run(["docker", "rmi", tag], capture_output=True).returncode == 0:
            break
        time.sleep(0.2)


# ------------------------------------------------------------------------------------------ microVMs

MICROVM = pytest.param("microvm", marks=pytest.mark.slow)  # QEMU microvm: TCG here, slow
# A shell runtime (AWS's tutorial loop) that reports what it sees of its VM: the image's file system,
# read-only and without what the filter drops (a device node, a setuid bit), the image's ENV, no network.
PROBE_BOOTSTRAP = r"""#!/bin/bash
set -euo pipefail
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
while true; do
  HEADERS="$(mktemp)"
  EVENT=$(curl -sS -D "$HEADERS" "$API/invocation/next")
  ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
  if touch /probe 2>/dev/null; then ROOT=writable; else ROOT=read-only; fi
  SETUID=$(find /usr/bin/probe-suid -perm -4000 | wc -l)
  if [ -e /probe-null ]; then NODE=present; else NODE=absent; fi
  NETS=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\n' ' ')
  echo "probing $ID"
  BODY=$(printf '{"uid":%s,"root":"%s","marker":"%s",' "$(id -u)" "$ROOT" "$(cat /etc/hearth-marker)")
  BODY+=$(printf '"env":"%s","setuid":%s,"node":"%s",' "$MARKER" "$SETUID" "$NODE")
  BODY+=$(printf '"interfaces":"%s","kernel":"%s","event":%s}' "$NETS" "$(uname -r)" "$EVENT")
  curl -sS "$API/invocation/$ID/response" -d "$BODY"
done
"""
PROBE_DOCKERFILE = """FROM {base}
COPY bootstrap /var/task/bootstrap
RUN echo from-the-image > /etc/hearth-marker && mknod /probe-null c 1 3
RUN cp /usr/bin/true /usr/bin/probe-suid && chmod 4755 /usr/bin/probe-suid
ENV MARKER=image-env
WORKDIR /var/task
ENTRYPOINT ["/var/task/bootstrap"]
"""


@pytest.mark.parametrize("backend", [MICROVM], indirect=True)
def test_image_function_in_a_microvm_sees_its_image_confined(
    hearth: HearthServer,
    fname: str,
    backend: str,
    provided_images: dict[str, str],
    docker_build: Callable[[Path, str], str],
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    (tmp_path / "bootstrap").write_text(PROBE_BOOTSTRAP)
    (tmp_path / "bootstrap").chmod(0o755)
    (tmp_path / "Dockerfile").write_text(PROBE_DOCKERFILE.format(base=provided_images["provided"]))
    image = docker_build(tmp_path, "hearth-test-vmprobe:1")
    # What the image holds, as a container sees it: the filter below must be what removes them.
    listing = ["ls", "-l", "/probe-null", "/usr/bin/probe-suid"]
    listed = docker_client.containers.run(image, entrypoint=listing, remove=True).decode()
    assert listed.startswith("crw") and "-rwsr-xr-x" in listed
    deploy_image(hearth, fname, image, backend=backend)
    reply = hearth.invoke(fname, {"n": 1})
    assert reply.status_code == 200, reply.text
    assert reply.json() == {
        "uid": 65534,
        "root": "read-only",
        "marker": "from-the-image",
        "env": "image-env",
        "setuid": 0,
        "node": "absent",
        "interfaces": "lo ",
        "kernel": reply.json()["kernel"],
        "event": {"n": 1},
    }
    assert reply.json()["kernel"] != os.uname().release  # the guest's own kernel
    record = invocation_record(hearth, reply.headers["x-hearth-invocation-id"])
    assert record["stdout"] == f"probing {reply.headers['x-hearth-invocation-id']}\n"
    assert record["backend"] == "microvm"


@pytest.mark.parametrize("backend", [MICROVM], indirect=True)
def test_awslambdaric_image_in_a_microvm(hearth: HearthServer, fname: str, ric_image: str, backend: str) -> None:
    deploy_image(hearth, fname, ric_image, backend=backend, timeout_s=3)
    reply = hearth.invoke(fname, {"n": 1})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["event"] == {"n": 1} and body["request_id"] == reply.headers["x-hearth-invocation-id"]
    assert body["name"] == fname and body["remaining_ok"] and body["uid"] == 65534
    failed = hearth.invoke(fname, {"fail": True})
    assert failed.status_code == 500
    assert (failed.json()["error"]["type"], failed.json()["error"]["message"]) == ("ValueError", "asked to fail")
    slow = hearth.invoke(fname, {"sleep": 10})
    assert slow.status_code == 504
    after = hearth.invoke(fname, {"n": 2})
    assert after.status_code == 200 and after.headers["x-hearth-path"] != "warm"  # a fresh VM after the timeout
