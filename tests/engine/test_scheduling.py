"""Sandboxes yield to the front (hearth.engine.backends.scheduling): a runc sandbox's agent runs under
SCHED_BATCH, so waking it never preempts the host's event loop; the function can still do all it could."""

from __future__ import annotations

import os

import docker

from hearth.testing import HearthServer


def agent_policies(client: docker.DockerClient, sandbox_id: str) -> dict[str, int]:
    """Each agent process in the sandbox's container (its command line) and its scheduling policy, read on
    the host. The container is named after the sandbox whether it started for the function or as a stem cell."""
    policies = {}
    for container in client.containers.list(filters={"name": sandbox_id}):
        for pid, command in container.top(ps_args="-o pid,args")["Processes"]:
            if "agent.py" in command and "docker-init" not in command:
                policies[command] = os.sched_getscheduler(int(pid))
    return policies


def test_the_agent_runs_under_sched_batch(hearth: HearthServer, docker_client: docker.DockerClient, fname: str) -> None:
    hearth.deploy(fname, "import os\ndef handler(event, context):\n    return os.sched_getscheduler(0)\n")
    response = hearth.invoke(fname)
    assert response.status_code == 200, response.text
    assert response.json() == os.SCHED_BATCH  # as the function sees itself
    record = hearth.client.get(f"/api/invocations/{response.headers['X-Hearth-Invocation-Id']}").json()
    policies = agent_policies(docker_client, record["sandbox_id"])
    assert policies and set(policies.values()) == {os.SCHED_BATCH}, policies
