"""The real `hearth` command, run as a subprocess against a real server: output, exit codes, no tracebacks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from hearth.testing import REPO, HearthServer, free_port

HANDLER = """\
import six

def handler(event, context):
    print("handling", event.get("who"))
    if event.get("fail"):
        raise ValueError("asked to fail")
    return {"hello": event.get("who", "world"), "six": six.__version__}
"""


def hearth_cli(
    server: HearthServer | None,
    *args: str,
    cwd: Path,
    url: str | None = None,
    stdin: str | None = None,
    key: str | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HEARTH_API_URL": url or (server.base_url if server else ""), "COLUMNS": "200"}
    env["HEARTH_API_KEY"] = key or (server.api_key if server else "none")
    result = subprocess.run(
        [sys.executable, "-m", "hearth.cli", *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # No traceback of the CLI itself (a function's own traceback, from /hearth/code, may show).
    assert f'File "{REPO}' not in result.stderr and "site-packages" not in result.stderr, result.stderr
    return result


@pytest.fixture
def project(tmp_path: Path, hearth: HearthServer, fname: str) -> Path:
    created = hearth_cli(hearth, "init", fname, "--language", "python", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    directory = tmp_path / fname
    assert {p.name for p in directory.iterdir()} == {"hearth.toml", "main.py", "requirements.txt"}
    (directory / "main.py").write_text(HANDLER)
    # A list of its own: the session's server shares its layer cache with the packaging tests.
    (directory / "requirements.txt").write_text('six==1.16.0 ; python_version >= "3"\n')
    (directory / "helpers").mkdir()
    (directory / "helpers" / "data.txt").write_text("bundled")
    return directory


def test_init_deploy_ls_get_invoke_rm(hearth: HearthServer, project: Path, fname: str) -> None:
    cwd = project.parent
    deployed = hearth_cli(hearth, "deploy", str(project), cwd=cwd)
    assert deployed.returncode == 0, deployed.stderr
    assert f"created {fname} version 1" in deployed.stdout
    assert "Successfully installed six" in deployed.stderr and "dependencies built" in deployed.stderr

    again = hearth_cli(hearth, "deploy", str(project), cwd=cwd)
    assert again.returncode == 0, again.stderr
    assert f"updated {fname} version 2" in again.stdout and "reused a cached layer" in again.stderr

    listed = hearth_cli(hearth, "ls", cwd=cwd)
    assert listed.returncode == 0 and fname in listed.stdout
    as_json = json.loads(hearth_cli(hearth, "ls", "--json", cwd=cwd).stdout)
    assert any(fn["name"] == fname and fn["version"] == 2 for fn in as_json)
    shown = hearth_cli(hearth, "get", fname, cwd=cwd)
    assert shown.returncode == 0 and "helpers/data.txt" in shown.stdout and "env.GREETING" in shown.stdout

    invoked = hearth_cli(hearth, "invoke", fname, "--data", '{"who": "cli"}', cwd=cwd)
    assert invoked.returncode == 0, invoked.stderr
    assert json.loads(invoked.stdout) == {"hello": "cli", "six": "1.16.0"}
    (cwd / "event.json").write_text('{"who": "file"}')
    from_file = hearth_cli(hearth, "invoke", fname, "--data", "@event.json", cwd=cwd)
    assert json.loads(from_file.stdout)["hello"] == "file"
    from_stdin = hearth_cli(hearth, "invoke", fname, "--data", "@-", cwd=cwd, stdin='{"who": "stdin"}')
    assert json.loads(from_stdin.stdout)["hello"] == "stdin"

    builds = hearth_cli(hearth, "builds", fname, "--json", cwd=cwd)
    rows = json.loads(builds.stdout)
    assert [row["cached"] for row in rows] == [True, False]
    log = hearth_cli(hearth, "builds", fname, rows[1]["id"], cwd=cwd)
    assert log.returncode == 0 and "six" in log.stdout

    removed = hearth_cli(hearth, "rm", fname, cwd=cwd)
    assert removed.returncode == 0 and f"deleted {fname}" in removed.stdout
    again_removed = hearth_cli(hearth, "rm", fname, cwd=cwd)
    assert again_removed.returncode == 1 and "NotFound" in again_removed.stderr


def test_a_users_key_deploys_into_their_namespace(hearth: HearthServer, project: Path, fname: str) -> None:
    user = f"cli-{fname}"
    assert hearth.client.post("/api/users", json={"name": user}).status_code == 201
    made = hearth.client.post(f"/api/users/{user}/keys", json={"scopes": ["deploy", "invoke"]})
    key, cwd = made.json()["key"], project.parent
    deployed = hearth_cli(hearth, "deploy", str(project), cwd=cwd, key=key)
    assert deployed.returncode == 0, deployed.stderr
    invoked = hearth_cli(hearth, "invoke", fname, "--data", '{"who": "ns"}', cwd=cwd, key=key)
    assert invoked.returncode == 0 and json.loads(invoked.stdout)["hello"] == "ns", invoked.stderr
    listed = json.loads(hearth_cli(hearth, "ls", "--json", cwd=cwd, key=key).stdout)
    assert [fn["name"] for fn in listed] == [f"{user}.{fname}"]
    trigger = httpx.post(f"{hearth.base_url}/fn/{user}/{fname}", timeout=30)  # an HTTP event: no "who"
    assert (trigger.status_code, trigger.json()["hello"]) == (200, "world"), trigger.text
    assert hearth_cli(hearth, "rm", fname, cwd=cwd, key=key).returncode == 0


def test_function_errors_exit_1_with_the_functions_message(hearth: HearthServer, project: Path, fname: str) -> None:
    assert hearth_cli(hearth, "deploy", str(project), "--quiet", cwd=project.parent).returncode == 0
    failed = hearth_cli(hearth, "invoke", fname, "--data", '{"fail": true}', cwd=project.parent)
    assert failed.returncode == 1
    assert "ValueError: asked to fail" in failed.stderr and failed.stdout == ""


def test_a_failed_build_exits_1_and_the_old_version_keeps_serving(
    hearth: HearthServer, project: Path, fname: str
) -> None:
    assert hearth_cli(hearth, "deploy", str(project), cwd=project.parent).returncode == 0
    (project / "requirements.txt").write_text("hearth-no-such-package==1.0\n")
    broken = hearth_cli(hearth, "deploy", str(project), cwd=project.parent)
    assert broken.returncode == 1
    assert "BuildFailed" in broken.stderr and "hearth-no-such-package" in broken.stderr
    assert f"version 1 of {fname} keeps serving" in broken.stderr
    still = hearth_cli(hearth, "invoke", fname, cwd=project.parent)
    assert still.returncode == 0 and json.loads(still.stdout)["hello"] == "world"


def test_javascript_scaffold_deploys_and_runs(hearth: HearthServer, tmp_path: Path, fname: str) -> None:
    assert hearth_cli(hearth, "init", fname, "-l", "javascript", cwd=tmp_path).returncode == 0
    assert hearth_cli(hearth, "deploy", fname, cwd=tmp_path).returncode == 0
    invoked = hearth_cli(hearth, "invoke", fname, "-d", '{"who": "node"}', cwd=tmp_path)
    assert invoked.returncode == 0, invoked.stderr
    assert json.loads(invoked.stdout) == {"message": "hello, node!", "function": fname}


def test_provided_scaffold_deploys_and_runs(hearth: HearthServer, tmp_path: Path, fname: str) -> None:
    """`hearth init -l provided`: a shell bootstrap over the Runtime API, on the catalog's provided runtime."""
    assert hearth_cli(hearth, "init", fname, "-l", "provided", cwd=tmp_path).returncode == 0
    assert '# runtime = "provided"' in (tmp_path / fname / "hearth.toml").read_text()
    deployed = hearth_cli(hearth, "deploy", fname, cwd=tmp_path)
    assert deployed.returncode == 0, deployed.stderr
    assert hearth.client.get(f"/api/functions/{fname}").json()["runtime"] == "provided"
    invoked = hearth_cli(hearth, "invoke", fname, "-d", '{"who": "sh"}', cwd=tmp_path)
    assert invoked.returncode == 0, invoked.stderr
    assert json.loads(invoked.stdout) == {"message": "hello, world!", "function": fname}


needs_go = pytest.mark.skipif(shutil.which("go") is None, reason="Debian's golang-go is not installed (Go bootstraps)")


@needs_go
def test_provided_go_scaffold_builds_in_a_sandbox_deploys_and_runs(
    hearth: HearthServer, tmp_path: Path, fname: str
) -> None:
    """`hearth init -l provided --template go`: Go source that `hearth deploy` compiles into `bootstrap`."""
    created = hearth_cli(hearth, "init", fname, "-l", "provided", "--template", "go", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert {p.name for p in (tmp_path / fname).iterdir()} == {"hearth.toml", "go.mod", "main.go"}
    deployed = hearth_cli(hearth, "deploy", fname, cwd=tmp_path)
    assert deployed.returncode == 0, deployed.stderr
    assert "sandboxed, no network" in deployed.stderr
    assert not (tmp_path / fname / "bootstrap").exists()  # built into the bundle, not into the directory
    invoked = hearth_cli(hearth, "invoke", fname, "-d", '{"who": "go"}', cwd=tmp_path)
    assert invoked.returncode == 0, invoked.stderr
    assert json.loads(invoked.stdout) == {"message": "hello, go!", "function": fname}
    failed = hearth.invoke(fname, {"fail": True})
    assert failed.status_code == 500
    assert failed.json()["error"]["type"] == "HandlerError", failed.text


@needs_go
def test_provided_go_build_sees_only_its_directory(hearth: HearthServer, tmp_path: Path, fname: str) -> None:
    """The Go build runs in a container that holds the function's directory and the toolchain, nothing
    else of the host: a module replaced by a host path next to it is not there (on the host it would build)."""
    assert hearth_cli(hearth, "init", fname, "-l", "provided", "--template", "go", cwd=tmp_path).returncode == 0
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "go.mod").write_text("module example.com/outside\n\ngo 1.19\n")
    (outside / "outside.go").write_text('package outside\n\nconst Secret = "host"\n')
    directory = tmp_path / fname
    with (directory / "go.mod").open("a") as mod:
        mod.write("\nrequire example.com/outside v0.0.0\n\nreplace example.com/outside => ../outside\n")
    (directory / "uses.go").write_text('package main\n\nimport "example.com/outside"\n\nvar _ = outside.Secret\n')
    deployed = hearth_cli(hearth, "deploy", fname, cwd=tmp_path)
    assert deployed.returncode == 2, deployed.stderr
    assert "go build of" in deployed.stderr and "failed" in deployed.stderr
    assert hearth.client.get(f"/api/functions/{fname}").status_code == 404


def test_usage_errors_exit_2(hearth: HearthServer, tmp_path: Path, fname: str) -> None:
    no_manifest = hearth_cli(hearth, "deploy", str(tmp_path), cwd=tmp_path)
    assert no_manifest.returncode == 2 and "no hearth.toml" in no_manifest.stderr
    (tmp_path / "hearth.toml").write_text('name = "x"\nlanguage = "python"\nmemory = 5\n')
    unknown_key = hearth_cli(hearth, "deploy", str(tmp_path), cwd=tmp_path)
    assert unknown_key.returncode == 2 and "unknown key(s) memory" in unknown_key.stderr
    (tmp_path / "hearth.toml").write_text("name = [broken")
    assert hearth_cli(hearth, "deploy", str(tmp_path), cwd=tmp_path).returncode == 2
    bad_json = hearth_cli(hearth, "invoke", fname, "--data", "{nope", cwd=tmp_path)
    assert bad_json.returncode == 2 and "not valid JSON" in bad_json.stderr
    assert hearth_cli(hearth, "invoke", cwd=tmp_path).returncode == 2  # missing argument
    assert hearth_cli(hearth, "init", "Bad_Name", "-l", "python", cwd=tmp_path).returncode == 2
    assert hearth_cli(hearth, "init", "x", "-l", "cobol", cwd=tmp_path).returncode == 2
    assert hearth_cli(hearth, "init", "x", "-l", "python", "--template", "go", cwd=tmp_path).returncode == 2


def test_api_errors_exit_1_with_a_clear_message(hearth: HearthServer, tmp_path: Path) -> None:
    missing = hearth_cli(hearth, "get", "no-such-function", cwd=tmp_path)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    unreachable = hearth_cli(None, "ls", cwd=tmp_path, url=f"http://127.0.0.1:{free_port()}")
    assert unreachable.returncode == 1 and "cannot reach Hearth" in unreachable.stderr
    wrong_key = subprocess.run(
        [sys.executable, "-m", "hearth.cli", "ls"],
        env={**os.environ, "HEARTH_API_URL": hearth.base_url, "HEARTH_API_KEY": "wrong"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert wrong_key.returncode == 1 and "Unauthorized" in wrong_key.stderr


def test_top_logs_and_async_follow_the_servers_contract(hearth: HearthServer, project: Path, fname: str) -> None:
    cwd = project.parent
    assert hearth_cli(hearth, "deploy", str(project), "-q", cwd=cwd).returncode == 0
    assert hearth_cli(hearth, "invoke", fname, "-d", '{"who": "logged"}', cwd=cwd).returncode == 0
    top = hearth_cli(hearth, "top", "--once", cwd=cwd)
    assert top.returncode == 0 and fname in top.stdout

    deadline = time.monotonic() + 30
    while True:
        logs = hearth_cli(hearth, "logs", fname, cwd=cwd)
        assert logs.returncode == 0, logs.stderr
        if "handling logged" in logs.stdout or time.monotonic() > deadline:  # records are written behind
            assert "handling logged" in logs.stdout
            break
        time.sleep(0.5)

    queued = hearth_cli(hearth, "invoke", fname, "--async", "-d", '{"who": "later"}', cwd=cwd)
    assert queued.returncode == 0, queued.stderr
    body = json.loads(queued.stdout)
    assert body["invocation_id"].startswith("job-"), body  # queued (202): the id of the async job
    deadline = time.monotonic() + 30
    while (job := hearth.client.get(body["status_url"]).json())["status"] not in ("succeeded", "failed", "timed_out"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    assert job["status"] == "succeeded" and job["result"]["hello"] == "later", job
