"""Runtime images: built from Debian packages (cached by recipe hash), run as nobody without network."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from hearth.images import catalog, containers, debian

RUN_OPTIONS = {"network_mode": "none", "user": "65534:65534", "read_only": True, "remove": True}
VERSION_PROGRAMS = {
    "python": ["python3", "-c", "import json,sys; print(sys.version)"],
    "javascript": ["node", "-e", "console.log(process.version)"],
    # provided: an OS-only image (curl for shell bootstraps; /bin/sh is bash, as on Amazon Linux)
    "provided": ["sh", "-c", 'curl --version | head -n 1; echo "sh=$BASH_VERSION"'],
}
# What each runtime must report: Debian bookworm has Python 3.11 and Node 18, trixie Python 3.13 and Node 20.
VERSIONS = {
    "python3.11": r"^3\.11\.\d+",
    "python3.13": r"^3\.13\.\d+",
    "nodejs18.x": r"^v18\.\d+\.\d+",
    "nodejs20.x": r"^v20\.\d+\.\d+",
    "provided": r"^curl \d+\.\d+\.\d+.*\nsh=5\.",
}


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env()
        client.ping()
    except Exception:
        pytest.skip("no docker daemon")
    yield client
    client.close()


@pytest.fixture(scope="module")
def refs(client: docker.DockerClient) -> dict[str, str]:
    return containers.ensure_images(client, progress=lambda line: print(line, flush=True))


def run(client: docker.DockerClient, ref: str, command: list[str]) -> str:
    return client.containers.run(ref, command, **RUN_OPTIONS).decode()


def test_ensure_images_returns_current_refs(client: docker.DockerClient, refs: dict[str, str]) -> None:
    assert set(refs) == set(catalog.RUNTIMES)
    for runtime, ref in refs.items():
        assert ref == containers.image_ref(runtime)
        assert containers.image_present(client, runtime)
        # The second call is served from Docker's cache (no lock, no build).
        assert containers.ensure_image(client, runtime, progress=pytest.fail) == ref


@pytest.mark.parametrize("runtime", catalog.RUNTIMES)
def test_runtime_runs_as_nobody_without_network(
    client: docker.DockerClient, refs: dict[str, str], runtime: str
) -> None:
    out = run(client, refs[runtime], VERSION_PROGRAMS[catalog.language_of(runtime)])
    assert re.match(VERSIONS[runtime], out.strip(), re.S), out


@pytest.mark.parametrize("runtime", catalog.RUNTIMES)
def test_image_contents(client: docker.DockerClient, refs: dict[str, str], runtime: str) -> None:
    script = (
        "echo uid=$(id -u) gid=$(id -g); "
        "grep '^nobody:' /etc/passwd; "
        "stat -c 'tmp=%a' /tmp; "
        "echo sources=$(ls -A /etc/apt/sources.list /etc/apt/sources.list.d 2>/dev/null | grep -v : | wc -w); "
        "echo lists=$(find /var/lib/apt/lists -type f ! -name lock 2>/dev/null | wc -l); "
        "echo doc=$(find /usr/share/doc /usr/share/man -mindepth 1 2>/dev/null | wc -l)"
    )
    out = run(client, refs[runtime], ["sh", "-c", script])
    assert "uid=65534 gid=65534" in out
    assert "nobody:" in out
    assert "tmp=1777" in out
    assert "sources=0" in out, out
    assert "lists=0" in out, out
    assert "doc=0" in out, out
    env = client.images.get(refs[runtime]).attrs["Config"]["Env"]
    assert "LANG=C.UTF-8" in env
    assert any(item.startswith("PATH=") and "/usr/bin" in item for item in env)


def test_image_ref_follows_the_recipe() -> None:
    for runtime in catalog.RUNTIMES:
        ref = containers.image_ref(runtime)
        assert ref == containers.image_ref(runtime)
        assert re.fullmatch(rf"hearth-runtime-{runtime}:[0-9a-f]{{12}}", ref)
        assert ref.endswith(containers.tag_for(containers.recipe(runtime)))
    assert containers.image_ref("python") != containers.image_ref("javascript")
    # A language names its default runtime: the one built from the host's suite.
    assert containers.image_ref("python") == containers.image_ref(catalog.default_runtime("python"))
    assert catalog.runtime_image(catalog.default_runtime("javascript")).suite == debian.host_suite()

    base = containers.recipe("python")
    assert containers.tag_for(base) == containers.tag_for(containers.recipe("python"))
    assert containers.tag_for(base) == containers.tag_for(dict(reversed(list(base.items()))))  # key order is irrelevant
    for change in (
        {"packages": [*base["packages"], "python3-yaml"]},
        {"suite": "trixie"},
        {"path_exclude": base["path_exclude"][:-1]},
        {"customize": []},
        {"variant": "minbase"},
    ):
        assert containers.tag_for({**base, **change}) != containers.tag_for(base), change

    with pytest.raises(ValueError):
        containers.recipe("cobol")


def test_image_ref_ignores_agent_code() -> None:
    recipe_text = repr(containers.recipe("python")) + repr(containers.recipe("javascript"))
    assert "agent" not in recipe_text


def test_mmdebstrap_command_reads_the_host() -> None:
    command = containers.mmdebstrap_command(containers.recipe("python"))
    assert command[-3:-1] == [debian.host_suite(), "-"]
    assert command[-1] == str(debian.host_sources())
    assert "--include=python3,python3-boto3" in command  # Lambda's Python runtimes ship boto3
    # No mirror is ever spelled out: the host's sources file is the mirror argument.
    assert not any("://" in part for part in command)


def test_another_suite_gets_sources_derived_from_the_hosts() -> None:
    other = next(image for image in catalog.CATALOG.values() if image.suite != debian.host_suite())
    command = containers.mmdebstrap_command(containers.recipe(other.name))
    assert command[-3:-1] == [other.suite, "-"]
    derived = Path(command[-1]).read_text()
    assert f"Suites: {other.suite}" in derived or f" {other.suite} " in derived
    assert debian.host_suite() not in derived  # no stanza of the host's own release (nor its -security)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mmdebstrap") is None, reason="needs root and mmdebstrap")
def test_failed_build_raises_and_leaves_no_image(client: docker.DockerClient) -> None:
    # An unknown suite leaves mmdebstrap with no essential set: it fails within seconds (a missing
    # package would fail only after the essential set is installed, ~20 s in).
    spec = {**containers.recipe("python"), "suite": "hearth-no-such-suite"}
    ref = containers.ref_for(spec)
    lines: list[str] = []
    with pytest.raises(containers.ImageBuildError) as failure:
        containers.build_image(client, "python", progress=lines.append, spec=spec)
    assert "mmdebstrap exited with" in str(failure.value)
    assert "E: " in str(failure.value)  # the tail of mmdebstrap's output
    assert any("mmdebstrap" in line for line in lines)
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(ref)
    labelled = client.images.list(filters={"label": f"hearth.recipe={ref.rsplit(':', 1)[1]}"})
    assert labelled == []


def test_builder_images_hold_the_installer_and_the_runtimes_own_interpreter(
    client: docker.DockerClient, refs: dict[str, str]
) -> None:
    builders = containers.ensure_builder_images(client, progress=lambda line: print(line, flush=True))
    # Every runtime has a builder image but provided, whose functions bring what they run (no dependency build).
    assert set(builders) == set(catalog.BUILDER_RUNTIMES) == set(catalog.RUNTIMES) - {"provided"}
    with pytest.raises(ValueError):
        containers.recipe("provided", "builder")
    installers = {"python": ["python3", "-m", "pip", "--version"], "javascript": ["npm", "--version"]}
    for runtime, ref in builders.items():
        assert ref == containers.builder_ref(runtime) and ref.startswith(containers.BUILDER_PREFIX)
        builder_recipe = containers.recipe(runtime, "builder")
        assert containers.tag_for(builder_recipe) != containers.tag_for(containers.recipe(runtime))
        command = VERSION_PROGRAMS[catalog.language_of(runtime)]
        assert run(client, ref, command) == run(client, refs[runtime], command)  # wheels and modules match
        assert run(client, ref, installers[catalog.language_of(runtime)]).strip()
