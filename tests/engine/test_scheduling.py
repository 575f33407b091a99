"""Sandboxes yield to the front (hearth.engine.backends.scheduling): a runc sandbox's agent runs under
SCHED_BATCH, so waking it never preempts the host's event loop; the function can still do all it could."""

from __future__ import annotations

import os

import docker

from hearth.testing import HearthServer


def agent_policies(client: docker.DockerClient, function: str) -> dict[str, int]:
    """Each process in the function's containers (host pid -> its command) and its scheduling policy."""
    policies = {}
    for container in client.containers.list(filters={"name": f"hearth-{function}-v"}):
        top = container.top(ps_args="-o pid,args")
        for pid, command in top["Processes"]:
            if "agent.py" in command and "docker-init" not in command:
                policies[command] = os.sched_getscheduler(int(pid))
    return policies


def test_the_agent_runs_under_sched_batch(hearth: HearthServer, docker_client: docker.DockerClient, fname: str) -> None:
    hearth.deploy(fname, "import os\ndef handler(event, context):\n    return os.sched_getscheduler(0)\n")
    response = hearth.invoke(fname)
    assert response.status_code == 200, response.text
    assert response.json() == os.SCHED_BATCH  # as the function sees itself
    policies = agent_policies(docker_client, fname)
    assert policies and set(policies.values()) == {os.SCHED_BATCH}, policies
