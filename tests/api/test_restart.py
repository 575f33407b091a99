"""Restarting Hearth keeps every function and leaves no container behind."""

from __future__ import annotations

import signal
import time

import docker

from hearth.testing import HearthServer


def owned_containers(client: docker.DockerClient, name: str) -> list[object]:
    return client.containers.list(all=True, filters={"name": f"hearth-{name}-v"}, ignore_removed=True)


def test_restart_keeps_functions_and_stops_sandboxes(
    fresh_hearth: HearthServer, fname: str, docker_client: docker.DockerClient
) -> None:
    fresh_hearth.deploy(fname, "def handler(e, c):\n    return 'py'\n", min_warm=1)
    fresh_hearth.deploy(fname + "-js", "exports.handler = async () => 'js';", language="javascript")
    fresh_hearth.client.patch(f"/api/functions/{fname}", json={"timeout_s": 7})
    assert fresh_hearth.invoke(fname).json() == "py"
    assert fresh_hearth.invoke(fname + "-js").json() == "js"
    assert owned_containers(docker_client, fname)

    assert fresh_hearth.stop(signal.SIGTERM) in (
        0,
        -signal.SIGTERM,
    )  # uvicorn re-raises the signal after a clean shutdown
    assert owned_containers(docker_client, fname) == []
    assert owned_containers(docker_client, fname + "-js") == []

    fresh_hearth.start()
    fn = fresh_hearth.client.get(f"/api/functions/{fname}").json()
    assert (fn["version"], fn["timeout_s"]) == (2, 7)
    assert fresh_hearth.invoke(fname).json() == "py"
    assert fresh_hearth.invoke(fname + "-js").json() == "js"


def test_orphans_of_a_killed_server_are_removed_at_start(
    fresh_hearth: HearthServer, fname: str, docker_client: docker.DockerClient
) -> None:
    fresh_hearth.deploy(fname, "def handler(e, c):\n    return 1\n")
    assert fresh_hearth.invoke(fname).status_code == 200
    deadline = time.monotonic() + 30  # a stem cell takes the function's name in the background
    while not owned_containers(docker_client, fname) and time.monotonic() < deadline:
        time.sleep(0.2)
    fresh_hearth.stop(signal.SIGKILL)
    assert len(owned_containers(docker_client, fname)) == 1  # left behind by the crash
    fresh_hearth.start()
    assert owned_containers(docker_client, fname) == []
    assert fresh_hearth.invoke(fname).status_code == 200
