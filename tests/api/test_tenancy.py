"""Tenancy edges: a user's records go with the user (a new user of the same name sees nothing of the old
one's), and `network: true` is a capability the admin grants (API, dashboard key, Lambda API)."""

from __future__ import annotations

import secrets
import sqlite3
import time
from typing import Any

import httpx
import pytest

from hearth.testing import HearthServer, zipped

boto3 = pytest.importorskip("boto3")
from botocore.exceptions import ClientError  # noqa: E402

SECRET_LOGGER = "def handler(event, context):\n    print('secret', event['secret'])\n    return 'done'\n"
HELLO = "def handler(event, context):\n    return 'hi'\n"


def as_key(hearth: HearthServer, key: str) -> httpx.Client:
    return httpx.Client(base_url=hearth.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def new_user(hearth: HearthServer, name: str, **fields: Any) -> httpx.Client:
    created = hearth.client.post("/api/users", json={"name": name, **fields})
    assert created.status_code == 201, created.text
    key = hearth.client.post(f"/api/users/{name}/keys", json={"scopes": ["deploy", "invoke"]})
    assert key.status_code == 201, key.text
    return as_key(hearth, key.json()["key"])


def wait_job(client: httpx.Client, job_id: str) -> None:
    deadline = time.monotonic() + 60
    while client.get(f"/api/invocations/{job_id}").json()["status"] not in ("succeeded", "failed", "timed_out"):
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_new_user_with_a_deleted_users_name_sees_none_of_their_records(hearth: HearthServer, fname: str) -> None:
    name = f"u-{fname}"
    secret = secrets.token_hex(8)
    old = new_user(hearth, name)
    assert old.post("/api/functions", json={"name": "work", "language": "python", "code": SECRET_LOGGER}).is_success
    sync = old.post("/api/functions/work/invoke", json={"secret": secret})
    assert sync.status_code == 200, sync.text
    record_id = sync.headers["x-hearth-invocation-id"]
    job_id = old.post("/api/functions/work/invoke", params={"mode": "async"}, json={"secret": secret}).json()[
        "invocation_id"
    ]
    wait_job(old, job_id)
    deadline = time.monotonic() + 60  # records are written behind: wait until both are stored
    while len(old.get("/api/invocations", params={"function": "work"}).json()["invocations"]) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert old.delete("/api/functions/work").status_code == 204
    assert hearth.client.delete(f"/api/users/{name}").status_code == 204
    # gone, not hidden: the admin finds none of it either
    assert hearth.client.get(f"/api/invocations/{record_id}").status_code == 404
    assert hearth.client.get(f"/api/invocations/{job_id}").status_code == 404
    assert hearth.client.get("/api/invocations", params={"function": f"{name}.work"}).json()["invocations"] == []

    # someone else, later, under the same name, with a function of the same name
    new = new_user(hearth, name)
    assert new.post("/api/functions", json={"name": "work", "language": "python", "code": HELLO}).is_success
    assert new.get("/api/invocations", params={"function": "work"}).json()["invocations"] == []
    assert new.get("/api/invocations").json()["invocations"] == []
    assert new.get(f"/api/invocations/{record_id}").status_code == 404
    assert new.get(f"/api/invocations/{job_id}").status_code == 404
    assert new.get("/api/jobs", params={"function": "work"}).json().get("jobs", []) == []
    logs = new.get("/api/functions/work/logs").json()["lines"]
    assert not [line for line in logs if secret in str(line)], logs
    metrics = new.get("/api/functions/work/metrics", params={"window": "1h", "step": "1m"}).json()
    assert sum(b["count"] for b in metrics["buckets"]) == 0, metrics
    hearth.client.delete(f"/api/functions/{name}.work")
    hearth.client.delete(f"/api/users/{name}")


def test_a_record_written_after_the_users_deletion_is_gone_when_the_name_is_given_again(
    hearth: HearthServer, fname: str
) -> None:
    """A late write (another node's write-behind buffer, a job ending late) lands after the deletion."""
    name = f"u-{fname}"
    new_user(hearth, name)
    assert hearth.client.delete(f"/api/users/{name}").status_code == 204
    with sqlite3.connect(hearth.data_dir / "hearth.db", timeout=30) as db:  # as another node would write it
        db.execute(
            "INSERT INTO invocations (id, function_name, version, mode, started_at, duration_ms, queue_ms, status,"
            " backend, stdout, stderr, logs_truncated, request_bytes, response_bytes)"
            " VALUES (?, ?, 1, 'sync', ?, 1, 0, 'ok', 'docker', 'late secret', '', 0, 0, 0)",
            (f"inv-late-{fname}", f"{name}.work", time.time()),
        )
    assert hearth.client.get(f"/api/invocations/inv-late-{fname}").status_code == 200
    new = new_user(hearth, name)
    assert hearth.client.get(f"/api/invocations/inv-late-{fname}").status_code == 404
    assert new.post("/api/functions", json={"name": "work", "language": "python", "code": HELLO}).is_success
    assert new.get("/api/invocations", params={"function": "work"}).json()["invocations"] == []
    hearth.client.delete(f"/api/functions/{name}.work")
    hearth.client.delete(f"/api/users/{name}")


def test_a_log_stream_ends_when_its_function_is_deleted(hearth: HearthServer, fname: str) -> None:
    """Else a stream opened by a deleted user would carry the logs of a later user's function of that name."""
    hearth.deploy(fname, HELLO)
    # A stream left open sends a ping every 15 s: a read timeout just under that tells it from one that ended.
    quiet = httpx.Timeout(60, read=14)
    with hearth.client.stream("GET", f"/api/functions/{fname}/logs/stream", timeout=quiet) as stream:
        lines = stream.iter_lines()
        assert next(lines) == ": connected"
        assert hearth.client.delete(f"/api/functions/{fname}").status_code == 204
        rest = list(lines)  # ends (a stream still open raises ReadTimeout)
    assert not [line for line in rest if line.startswith("data:")], rest


NET = {"language": "python", "code": HELLO, "network": True}


def test_network_is_a_capability_the_admin_grants(hearth: HearthServer, fname: str) -> None:
    name = f"u-{fname}"
    user = new_user(hearth, name)
    assert hearth.client.get(f"/api/users/{name}").json()["allow_network"] is False

    refused = user.post("/api/functions", json={"name": "net", **NET})
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert error["capability"] == "allow_network" and "allow_network" in error["message"], error
    assert user.get("/api/functions/net").status_code == 404
    # an update that would turn it on is refused too, and the function keeps its version
    assert user.post("/api/functions", json={"name": "net", "language": "python", "code": HELLO}).is_success
    assert user.patch("/api/functions/net", json={"network": True}).status_code == 403
    replaced = user.put("/api/functions/net", json=NET)
    assert replaced.status_code == 403 and replaced.json()["error"]["capability"] == "allow_network"
    assert user.get("/api/functions/net").json()["version"] == 1

    # the dashboard's key (the admin's namespace, no admin scope) does not have it either
    dashboard = as_key(hearth, (hearth.data_dir / "dashboard_key").read_text().strip())
    assert dashboard.post("/api/functions", json={"name": f"{fname}-net", **NET}).status_code == 403
    # the admin key always may, in any namespace
    admins = hearth.client.post("/api/functions", json={"name": f"{fname}-net", **NET})
    assert admins.status_code == 201 and admins.json()["network"] is True, admins.text
    assert hearth.client.patch(f"/api/functions/{name}.net", json={"network": True}).json()["network"] is True
    # ... and a version with network stays the capability's: the user cannot write a new one without it
    assert user.patch("/api/functions/net", json={"memory_mb": 96}).status_code == 403
    assert user.patch("/api/functions/net", json={"network": False, "memory_mb": 96}).json()["network"] is False

    granted = hearth.client.patch(f"/api/users/{name}", json={"allow_network": True})
    assert granted.status_code == 200 and granted.json()["allow_network"] is True
    turned_on = user.patch("/api/functions/net", json={"network": True})
    assert turned_on.status_code == 200 and turned_on.json()["network"] is True, turned_on.text
    assert user.post("/api/functions", json={"name": "net2", **NET}).status_code == 201

    # revoked: no new network versions (what runs keeps running until changed)
    assert hearth.client.patch(f"/api/users/{name}", json={"allow_network": False}).json()["allow_network"] is False
    assert user.patch("/api/functions/net2", json={"timeout_s": 5}).status_code == 403
    for fn in ("net", "net2"):
        hearth.client.delete(f"/api/functions/{name}.{fn}")
    hearth.client.delete(f"/api/functions/{fname}-net")
    hearth.client.delete(f"/api/users/{name}")


def test_users_can_be_created_with_the_capability(hearth: HearthServer, fname: str) -> None:
    name = f"u-{fname}"
    user = new_user(hearth, name, allow_network=True)
    assert hearth.client.get("/api/users").json()["users"][0].keys() >= {"allow_network"}
    created = user.post("/api/functions", json={"name": "net", **NET})
    assert created.status_code == 201 and created.json()["network"] is True, created.text
    hearth.client.delete(f"/api/functions/{name}.net")
    hearth.client.delete(f"/api/users/{name}")


def test_the_lambda_api_needs_the_capability_for_a_network_function(hearth: HearthServer, fname: str) -> None:
    """The Lambda API has no network setting (a Lambda function's VpcConfig is not Hearth's network): through it
    a user reaches `network: true` only by writing a new version of a function that has it, which is refused."""
    name = f"u-{fname}"
    new_user(hearth, name)
    key = hearth.client.post(f"/api/users/{name}/keys", json={"scopes": ["deploy", "invoke"]}).json()
    aws: Any = boto3.client(
        "lambda",
        endpoint_url=hearth.base_url,
        region_name="eu-west-1",
        aws_access_key_id=key["aws_access_key_id"],
        aws_secret_access_key=key["aws_secret_access_key"],
    )
    bundle = zipped({"app.py": "def handler(event, context):\n    return 'v'\n"})
    created = aws.create_function(
        FunctionName="net",
        Runtime="python3.11",
        Role="arn:aws:iam::1:role/x",
        Handler="app.handler",
        Code={"ZipFile": bundle},
    )
    assert created["FunctionName"] == "net"
    assert hearth.client.get(f"/api/functions/{name}.net").json()["network"] is False
    assert hearth.client.patch(f"/api/functions/{name}.net", json={"network": True}).status_code == 200  # the admin

    for call in (
        lambda: aws.update_function_code(FunctionName="net", ZipFile=bundle),
        lambda: aws.update_function_configuration(FunctionName="net", Timeout=5),
    ):
        with pytest.raises(ClientError) as refused:
            call()
        error = refused.value.response
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 403, error
        assert error["Error"]["Code"] == "AccessDeniedException" and "allow_network" in error["Error"]["Message"]
    assert hearth.client.get(f"/api/functions/{name}.net").json()["version"] == 2

    hearth.client.patch(f"/api/users/{name}", json={"allow_network": True})
    assert aws.update_function_configuration(FunctionName="net", Timeout=5)["Timeout"] == 5
    hearth.client.delete(f"/api/functions/{name}.net")
    hearth.client.delete(f"/api/users/{name}")


def test_the_metrics_scope_gives_the_platform_series_and_nothing_else(hearth: HearthServer, fname: str) -> None:
    name = f"u-{fname}"
    new_user(hearth, name)
    plain = as_key(hearth, hearth.client.post(f"/api/users/{name}/keys", json={"scopes": ["read"]}).json()["key"])
    watcher = as_key(hearth, hearth.client.post(f"/api/users/{name}/keys", json={"scopes": ["metrics"]}).json()["key"])
    series = {"window": "5m", "step": "1m"}
    assert plain.get("/api/metrics/series", params=series).status_code == 403
    assert watcher.get("/api/metrics/series", params=series).status_code == 200
    assert watcher.get("/api/functions").status_code == 403  # `metrics` is not `read`
    assert watcher.post("/api/users", json={"name": f"v-{fname}"}).status_code == 403
    hearth.client.delete(f"/api/users/{name}")
