"""The issue's attacks on dependency builds, through the real API: refused, and nothing of the host leaks.

With scripts allowed, a package.json `postinstall` runs inside the build: it probes what it can see
and reach and leaves its findings in the layer, which the test reads back on the host.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from hearth.api.app import owner_id
from hearth.testing import HearthServer, b64_zip

PY_HANDLER = {"app.py": "def handler(event, context):\n    return 'v1'\n"}
JS_HANDLER = "exports.handler = async () => 'ok';\n"

PYTHON_VECTORS = [
    "a/../../../x/pkg\n",
    "pkg @ fi\\\nle:///etc/passwd\n",
    "pkg @ http://127.0.0.1:{port}/pkg-1.0.tar.gz\n",
    "-\\\nr /etc/shadow\n",
    "--requirement=/proc/self/environ\n",
    "--requirement=http://127.0.0.1:{port}/metrics\n",
]
NODE_VECTORS = [
    {"dependencies": {"x": "git+file:///some/host/repo"}},
    {"dependencies": {"x": "file:../../../../etc"}},
    {"dependencies": {"x": "http://127.0.0.1:{port}/x.tgz"}},
]

# Runs as the root package's postinstall inside the build (scripts allowed): results go into the layer.
PROBE = r"""
const fs = require('fs'), net = require('net');
const [port, dataDir] = [Number(process.env.npm_package_config_port), process.env.npm_package_config_data];
const out = {uid: process.getuid(), env: Object.keys(process.env).filter((k) => !k.startsWith('npm_')),
  seen: Object.fromEntries([dataDir, '/var/run/docker.sock', '/run/docker.sock'].map((p) => [p, fs.existsSync(p)]))};
const done = () => fs.writeFileSync('node_modules/probe.json', JSON.stringify(out));
const direct = net.connect(port, '127.0.0.1');
direct.on('connect', () => { out.direct = 'connected'; direct.destroy(); viaProxy(); });
direct.on('error', (e) => { out.direct = e.code; viaProxy(); });
function viaProxy() {
  const proxy = net.connect(3128, '127.0.0.1', () => proxy.write(`CONNECT 127.0.0.1:${port} HTTP/1.1\r\n\r\n`));
  proxy.on('data', (d) => { out.proxy = d.toString().split('\r\n')[0]; proxy.destroy(); done(); });
  proxy.on('error', (e) => { out.proxy = e.code; done(); });
}
"""


def deploy(hearth: HearthServer, name: str, language: str, files: dict[str, str]) -> httpx.Response:
    handler = "app.handler" if language == "python" else "index.handler"
    body = {"name": name, "language": language, "handler": handler, "zip_base64": b64_zip(files)}
    return hearth.client.post("/api/functions", json=body)


def build_containers() -> list[str]:
    client = docker.from_env()
    return [c.name for c in client.containers.list(all=True, filters={"label": "hearth.build"})]


@pytest.mark.parametrize("vector", PYTHON_VECTORS)
def test_requirements_vectors_are_refused_and_leak_nothing(hearth: HearthServer, fname: str, vector: str) -> None:
    requirements = vector.replace("{port}", str(hearth.port))
    response = deploy(hearth, fname, "python", {**PY_HANDLER, "requirements.txt": requirements})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["message"].startswith("requirements.txt line 1: ") or "requirements.txt line 1: " in error["message"]
    assert "log_tail" not in error and "build_id" not in error  # refused before any build ran
    assert hearth.api_key not in response.text and "root:" not in response.text
    assert hearth.client.get(f"/api/functions/{fname}").status_code == 404


@pytest.mark.parametrize("vector", NODE_VECTORS)
def test_package_json_vectors_are_refused_and_leak_nothing(hearth: HearthServer, fname: str, vector: dict) -> None:
    manifest = json.dumps(vector).replace("{port}", str(hearth.port))
    response = deploy(hearth, fname, "javascript", {"index.js": JS_HANDLER, "package.json": manifest})
    assert response.status_code == 422, response.text
    assert "package.json dependencies.x" in response.json()["error"]["message"]
    assert hearth.api_key not in response.text


def test_a_failed_build_log_holds_nothing_of_the_server(hearth: HearthServer, fname: str) -> None:
    response = deploy(hearth, fname, "python", {**PY_HANDLER, "requirements.txt": "hearth-no-such-pkg==0.0.1\n"})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    build = hearth.client.get(f"/api/functions/{fname}/builds/{error['build_id']}")
    for text in (response.text, build.text):
        assert hearth.api_key not in text and str(hearth.data_dir) not in text
    assert "hearth-no-such-pkg" in build.json()["log"]


@pytest.fixture
def scripts_hearth(tmp_path: Path, runtime_images: dict[str, str]) -> Iterator[HearthServer]:
    server = HearthServer(tmp_path / "data", env={"HEARTH_BUILD_ALLOW_SCRIPTS": "true"})
    server.start()
    yield server
    server.stop()


def test_install_scripts_run_in_the_sandbox_and_cannot_reach_the_server(
    scripts_hearth: HearthServer, fname: str
) -> None:
    hearth = scripts_hearth
    manifest = {
        "name": "probe",
        "dependencies": {"is-number": "7.0.0"},
        "config": {"port": hearth.port, "data": str(hearth.data_dir)},
        "scripts": {"postinstall": "node -e " + shlex.quote(PROBE)},
    }
    response = deploy(hearth, fname, "javascript", {"index.js": JS_HANDLER, "package.json": json.dumps(manifest)})
    assert response.status_code == 201, response.text
    layer = hearth.data_dir / "code" / "layers" / response.json()["layer"] / "node_modules"
    probe = json.loads((layer / "probe.json").read_text())
    assert probe["uid"] == 65534
    assert not [key for key in probe["env"] if key.startswith("HEARTH")]
    assert probe["seen"] == {str(hearth.data_dir): False, "/var/run/docker.sock": False, "/run/docker.sock": False}
    assert probe["direct"] == "ECONNREFUSED"  # the build's loopback is its own
    assert probe["proxy"] == "HTTP/1.1 403 Forbidden"
    assert (layer / "is-number" / "package.json").is_file()
    build = hearth.client.get(f"/api/functions/{fname}/builds/{response.json()['build_id']}").text
    assert hearth.api_key not in build
    assert hearth.invoke(fname).json() == "ok"


def test_a_build_over_its_time_leaves_nothing_and_the_serving_version_stays(
    tmp_path: Path, runtime_images: dict[str, str], fname: str
) -> None:
    env = {"HEARTH_BUILD_ALLOW_SCRIPTS": "true", "HEARTH_BUILD_TIMEOUT_S": "5"}
    hearth = HearthServer(tmp_path / "data", env=env)
    hearth.start()
    try:
        assert deploy(hearth, fname, "javascript", {"index.js": JS_HANDLER}).status_code == 201
        stuck = {"dependencies": {"is-number": "7.0.0"}, "scripts": {"preinstall": "sleep 600"}}
        body = {
            "language": "javascript",
            "handler": "index.handler",
            "zip_base64": b64_zip(
                {"index.js": "exports.handler = async () => 'v2';\n", "package.json": json.dumps(stuck)}
            ),
        }
        response = hearth.client.put(f"/api/functions/{fname}", json=body)
        assert response.status_code == 422, response.text
        assert "did not finish within 5 s" in response.json()["error"]["message"]
        assert hearth.invoke(fname).json() == "ok"
        layers = hearth.data_dir / "code" / "layers"
        assert [p.name for p in layers.iterdir()] == []  # no layer, no staging directory
        assert build_containers() == [] or all(fname not in name for name in build_containers())
    finally:
        hearth.stop()


def test_sdists_build_only_when_scripts_are_allowed_and_then_in_the_sandbox(
    hearth: HearthServer, scripts_hearth: HearthServer, fname: str
) -> None:
    """wget 3.2 is published as an sdist only: building it runs its setup.py."""
    app = {"app.py": "import wget\ndef handler(event, context):\n    return wget.__version__\n"}
    files = {**app, "requirements.txt": "wget==3.2\n"}
    refused = deploy(hearth, fname, "python", files)
    assert refused.status_code == 422 and "wget" in refused.json()["error"]["message"], refused.text
    built = deploy(scripts_hearth, fname, "python", files)
    assert built.status_code == 201, built.text
    log = scripts_hearth.client.get(f"/api/functions/{fname}/builds/{built.json()['build_id']}").json()["log"]
    assert "Building wheel for wget (setup.py)" in log
    assert scripts_hearth.invoke(fname).json() == "3.2"


def test_a_server_killed_mid_build_leaves_nothing_after_its_restart(
    tmp_path: Path, runtime_images: dict[str, str], fname: str
) -> None:
    hearth = HearthServer(tmp_path / "data", env={"HEARTH_BUILD_ALLOW_SCRIPTS": "true"})
    hearth.start()
    stuck = {"dependencies": {"is-number": "7.0.0"}, "scripts": {"preinstall": "sleep 600"}}
    files = {"index.js": JS_HANDLER, "package.json": json.dumps(stuck)}

    def deploy_until_killed() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the server dies under this request
            deploy(hearth, fname, "javascript", files)

    deploying = threading.Thread(target=deploy_until_killed)
    deploying.start()
    client = docker.from_env()
    owner = owner_id(hearth.data_dir.resolve())  # the label of this server's containers
    mine = {"label": [f"hearth.owner={owner}", "hearth.build"]}
    deadline = time.monotonic() + 180  # not a timing check: a bound on waiting for the build to start
    while not client.containers.list(filters=mine) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.containers.list(filters=mine), "the build's container never started"
    layers = hearth.data_dir / "code" / "layers"
    try:
        assert list(layers.glob(".build-*")) and list(Path(tempfile.gettempdir()).glob(f"hearth-build-{owner}-*"))
        hearth.stop(signal.SIGKILL)
        deploying.join()
        hearth.start()  # sweeps at start: the build's container, its host directory, its staging directory
        assert client.containers.list(all=True, filters=mine) == []
        assert list(Path(tempfile.gettempdir()).glob(f"hearth-build-{owner}-*")) == []
        assert list(layers.iterdir()) == []
        assert hearth.client.get(f"/api/functions/{fname}").status_code == 404
    finally:
        hearth.stop()
