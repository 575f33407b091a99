"""The README's quick start, and the docs' shell examples after it, run verbatim against a Hearth
started as the README starts it.

The block under "## Quick start" is extracted from README.md and run with bash, unchanged: it reads
the key from `.hearth/api_key` and calls `localhost:8000`, so the server runs with its defaults (port
8000, data dir `.hearth` in the working directory, a generated key). To have port 8000 to itself while
other servers run on this machine, it runs in a network namespace of its own when it can (root and
`unshare`); otherwise on the host if 8000 is free, else the test is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hearth.testing import REPO

DRIVER = """\
set -u
if [ "${OWN_NETNS:-0}" = 1 ]; then ip link set lo up; fi
"$PYTHON" -m hearth.cli serve > server.log 2>&1 &
server=$!
for _ in $(seq 1200); do
  curl -s -o /dev/null localhost:8000/healthz && break
  sleep 0.1
done
for script in $SCRIPTS; do
  bash "$script.sh" > "$script.out" 2> "$script.err"
  echo $? > "$script.rc"
done
kill -TERM $server
wait $server || true
"""


def sh_block(document: str, heading: str) -> str:
    """The first ```sh block under `heading` in `document` (a path below the repository)."""
    text = "\n" + (REPO / document).read_text()
    section = text.split(f"\n{heading}\n", 1)[1]
    return section.split("```sh\n", 1)[1].split("\n```", 1)[0] + "\n"


# Run in this order in one directory against one server: (name, document, heading).
SCRIPTS = [
    ("quick_start", "README.md", "## Quick start"),
    ("cli", "docs/cli.md", "## A function's directory"),
    ("lambda_cli", "docs/lambda.md", "# AWS Lambda API"),
    ("backends", "docs/isolation.md", "## Checking a host"),
]


def own_network_namespace() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return False
    return subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def json_values(text: str) -> list[Any]:
    """curl prints each answer without a newline: split the concatenated JSON values."""
    decoder, values, at = json.JSONDecoder(), [], 0
    while at < len(text):
        if text[at].isspace():
            at += 1
            continue
        value, at = decoder.raw_decode(text, at)
        values.append(value)
    return values


def test_quick_start_and_docs_examples_run_as_written(tmp_path: Path, runtime_images: dict[str, str]) -> None:
    netns = own_network_namespace()
    if not netns and not port_free(8000):
        pytest.skip("port 8000 is taken and no network namespace of our own can be made (needs root and unshare)")
    for name, document, heading in SCRIPTS:
        (tmp_path / f"{name}.sh").write_text(sh_block(document, heading))
    (tmp_path / "driver.sh").write_text(DRIVER)
    env = {key: value for key, value in os.environ.items() if not key.startswith("HEARTH_")}
    env.update({"PYTHON": sys.executable, "OWN_NETNS": "1" if netns else "0"})
    env.update({"SCRIPTS": " ".join(name for name, _, _ in SCRIPTS)})
    # `hearth` as `make venv` installs it
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    command = ["unshare", "--net", "bash", "driver.sh"] if netns else ["bash", "driver.sh"]
    subprocess.run(command, cwd=tmp_path, env=env, timeout=900, check=True)
    log = (tmp_path / "server.log").read_text()

    def ran(name: str) -> str:
        assert (tmp_path / f"{name}.rc").read_text().strip() == "0", (tmp_path / f"{name}.err").read_text()
        return (tmp_path / f"{name}.out").read_text()

    out = ran("quick_start")
    assert (tmp_path / ".hearth" / "api_key").is_file() and "generated an admin API key" in log, log[-3000:]
    created, invoked, triggered, created_js, backends, runtimes, created_313, invoked_313, created_gvisor = json_values(
        out
    )
    assert created["name"] == "hello" and created["version"] == 1, created
    assert invoked == {"hi": "you"}  # the comment's promise
    assert triggered == {"hi": "world"}  # "HTTP trigger: {"hi":"world"}"
    assert created_js["name"] == "js" and created_js["language"] == "javascript", created_js
    assert {r["name"] for r in runtimes["runtimes"]} >= {"python3.11", "python3.13", "nodejs18.x", "nodejs20.x"}
    assert created_313["runtime"] == "python3.13", created_313
    assert invoked_313.startswith("3.13."), invoked_313  # the comment's promise: "3.13.x ..."
    gvisor = next(b for b in backends["backends"] if b["name"] == "gvisor")
    if gvisor["available"]:
        assert created_gvisor["name"] == "untrusted" and created_gvisor["backend"] == "gvisor", created_gvisor
    else:  # the README's line still runs: the API says why this host cannot
        assert created_gvisor["error"]["type"] == "ValidationError", created_gvisor

    # docs/cli.md: init, deploy (replaces the quick start's hello) and invoke
    assert json.loads(ran("cli").strip().splitlines()[-1])["message"] == "hello, you!"
    # docs/lambda.md: the AWS CLI's invoke writes the result to out.json
    if shutil.which("aws", path=env["PATH"]):
        assert json.loads(ran("lambda_cli"))["StatusCode"] == 200
        assert json.loads((tmp_path / "out.json").read_text())["message"] == "hello, world!"
    # docs/isolation.md
    assert {b["name"] for b in json.loads(ran("backends"))["backends"]} >= {"docker", "gvisor"}
