"""Users, scoped API keys (hashed at rest, revocable), ownership and quotas, through the real API."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from typing import Any

import httpx

from hearth.testing import HearthServer

HELLO = "def handler(event, context):\n    print('hi')\n    return {'hello': event.get('who', 'world')}\n"


def as_key(hearth: HearthServer, key: str) -> httpx.Client:
    return httpx.Client(base_url=hearth.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def make_user(hearth: HearthServer, name: str, **quotas: Any) -> None:
    created = hearth.client.post("/api/users", json={"name": name, **quotas})
    assert created.status_code == 201, created.text
    assert created.json()["name"] == name and created.json()["functions"] == 0


def make_key(hearth: HearthServer, user: str, *scopes: str) -> dict[str, Any]:
    created = hearth.client.post(f"/api/users/{user}/keys", json={"name": "test", "scopes": list(scopes)})
    assert created.status_code == 201, created.text
    return dict(created.json())


def fn_body(name: str, **settings: Any) -> dict[str, Any]:
    return {"name": name, "language": "python", "code": HELLO, **settings}


def test_users_see_and_manage_only_their_own_functions(hearth: HearthServer, fname: str) -> None:
    alice_name, bob_name = f"alice-{fname}", f"bob-{fname}"
    make_user(hearth, alice_name)
    make_user(hearth, bob_name)
    alice = as_key(hearth, make_key(hearth, alice_name, "deploy", "invoke")["key"])
    bob = as_key(hearth, make_key(hearth, bob_name, "deploy", "invoke")["key"])
    key = f"{alice_name}.{fname}"  # the function's name outside alice's namespace

    created = alice.post("/api/functions", json=fn_body(fname))
    assert created.status_code == 201, created.text
    assert created.json()["owner"] == alice_name and created.json()["name"] == key
    assert created.json()["route"] == f"/{alice_name}/{fname}"
    assert alice.post(f"/api/functions/{fname}/invoke", json={"who": "alice"}).json() == {"hello": "alice"}
    assert alice.get(f"/api/functions/{key}").status_code == 200  # her own, qualified
    assert [f["name"] for f in alice.get("/api/functions").json()["functions"]] == [key]
    assert key in [f["name"] for f in hearth.client.get("/api/functions").json()["functions"]]  # admin sees all
    assert hearth.client.get(f"/api/functions/{fname}").status_code == 404  # the admin's namespace is its own

    # Bob: as if the function did not exist, whether he names it short or qualified
    assert key not in [f["name"] for f in bob.get("/api/functions").json()["functions"]]
    for name in (fname, key):
        for method, path in [
            ("GET", f"/api/functions/{name}"),
            ("PATCH", f"/api/functions/{name}"),
            ("DELETE", f"/api/functions/{name}"),
            ("POST", f"/api/functions/{name}/invoke"),
            ("GET", f"/api/functions/{name}/metrics"),
            ("GET", f"/api/functions/{name}/logs"),
            ("GET", f"/api/functions/{name}/versions"),
        ]:
            response = bob.request(method, path, json={} if method in ("PATCH", "POST") else None)
            assert response.status_code == 404, (method, path, response.text)
    upload = bob.put(f"/api/functions/{key}/code", content=b"PK", headers={"content-type": "application/zip"})
    assert upload.status_code == 404  # not even a function in alice's namespace made by bob
    assert bob.get("/api/invocations", params={"function": key}).json()["invocations"] == []
    summary = bob.get("/api/metrics/summary").json()
    assert key not in [row["function"] for row in summary["functions"]]
    assert bob.get("/api/metrics/series").status_code == 403
    # users cannot manage users or keys
    assert bob.get("/api/users").status_code == 403
    assert bob.post(f"/api/users/{bob_name}/keys", json={"scopes": ["admin"]}).status_code == 403
    # deleting a user who owns functions is refused; after the function goes, it works
    assert hearth.client.delete(f"/api/users/{alice_name}").status_code == 409
    assert alice.delete(f"/api/functions/{fname}").status_code == 204
    assert hearth.client.delete(f"/api/users/{alice_name}").status_code == 204
    assert alice.get("/api/functions").status_code == 401  # its keys went with it


def test_names_are_per_namespace_and_routes_are_claimed_per_namespace(hearth: HearthServer, fname: str) -> None:
    alice_name, bob_name = f"na-{fname}", f"nb-{fname}"
    make_user(hearth, alice_name)
    make_user(hearth, bob_name)
    alice = as_key(hearth, make_key(hearth, alice_name, "deploy", "invoke")["key"])
    bob = as_key(hearth, make_key(hearth, bob_name, "deploy", "invoke")["key"])
    # the same name three times: the admin's, alice's and bob's are three functions
    admin_fn = hearth.client.post("/api/functions", json=fn_body(fname, env={"WHO": "admin"}))
    assert admin_fn.status_code == 201 and admin_fn.json()["name"] == fname and admin_fn.json()["route"] == f"/{fname}"
    code = "import os\ndef handler(event, context):\n    return os.environ['WHO']\n"
    for user, client in ((alice_name, alice), (bob_name, bob)):
        made = client.post("/api/functions", json={**fn_body(fname), "code": code, "env": {"WHO": user}})
        assert made.status_code == 201, made.text
        assert client.post("/api/functions", json=fn_body(fname)).status_code == 409  # unique in the namespace
    for user, client in ((alice_name, alice), (bob_name, bob)):
        assert client.post(f"/api/functions/{fname}/invoke", json={}).json() == user
        assert httpx.post(f"{hearth.base_url}/fn/{user}/{fname}", json={}, timeout=30).json() == user
        assert hearth.client.post(f"/api/functions/{user}.{fname}/invoke", json={}).json() == user
        assert client.get(f"/api/functions/{fname}/logs").status_code == 200  # flushes the records
        records = client.get("/api/invocations", params={"function": fname}).json()["invocations"]
        assert {r["function"] for r in records} == {f"{user}.{fname}"} and len(records) == 3
    assert hearth.client.get(f"/api/functions/{fname}").json()["env"] == {"WHO": "admin"}

    # a user's routes lie in their own prefix; the admin's outside every user's
    outside = alice.patch(f"/api/functions/{fname}", json={"route": f"/{bob_name}/mine"})
    assert outside.status_code == 422 and outside.json()["error"]["fields"][0]["field"] == "route"
    assert alice.patch(f"/api/functions/{fname}", json={"route": f"/{alice_name}/v2/x"}).status_code == 200
    assert httpx.post(f"{hearth.base_url}/fn/{alice_name}/v2/x", json={}, timeout=30).json() == alice_name
    squat = hearth.client.post("/api/functions", json=fn_body(f"{fname}-s", route=f"/{alice_name}/s"))
    assert squat.status_code == 409 and alice_name in squat.json()["error"]["message"]
    # and a new user cannot be made over routes the admin already serves
    assert hearth.client.post("/api/functions", json=fn_body(f"{fname}-p", route=f"/p-{fname}/x")).status_code == 201
    assert hearth.client.post("/api/users", json={"name": f"p-{fname}"}).status_code == 409


def test_scopes_limit_what_a_key_can_do(hearth: HearthServer, fname: str) -> None:
    user = f"u-{fname}"
    make_user(hearth, user)
    deployer = as_key(hearth, make_key(hearth, user, "deploy")["key"])
    invoker = as_key(hearth, make_key(hearth, user, "invoke")["key"])
    reader = as_key(hearth, make_key(hearth, user, "read")["key"])
    assert reader.post("/api/functions", json=fn_body(fname)).status_code == 403
    assert invoker.post("/api/functions", json=fn_body(fname)).status_code == 403
    assert deployer.post("/api/functions", json=fn_body(fname)).status_code == 201
    assert deployer.get(f"/api/functions/{fname}").status_code == 200  # deploy implies read
    refused = deployer.post(f"/api/functions/{fname}/invoke", json={})
    assert refused.status_code == 403 and "invoke" in refused.json()["error"]["message"]
    assert invoker.post(f"/api/functions/{fname}/invoke", json={"who": "i"}).json() == {"hello": "i"}
    assert invoker.get(f"/api/functions/{fname}").status_code == 403
    assert reader.get(f"/api/functions/{fname}").status_code == 200
    assert reader.delete(f"/api/functions/{fname}").status_code == 403
    assert hearth.client.post(f"/api/users/{user}/keys", json={"scopes": ["root"]}).status_code == 422
    assert hearth.client.post("/api/users", json={"name": "admin"}).status_code == 409
    assert hearth.client.post("/api/users", json={"name": "Bad Name"}).status_code == 422


def test_keys_are_hashed_at_rest_shown_once_and_revocable(hearth: HearthServer, fname: str) -> None:
    user = f"k-{fname}"
    make_user(hearth, user)
    made = make_key(hearth, user, "read")
    key = made["key"]
    listed = hearth.client.get(f"/api/users/{user}/keys").json()["keys"]
    assert [k["id"] for k in listed] == [made["id"]] and "key" not in listed[0]
    with sqlite3.connect(hearth.data_dir / "hearth.db") as db:
        (stored,) = db.execute("SELECT sha256 FROM api_keys WHERE id = ?", (made["id"],)).fetchone()
        dump = "\n".join(db.iterdump())
    assert stored == hashlib.sha256(key.encode()).hexdigest() and key not in dump
    client = as_key(hearth, key)
    assert client.get("/api/functions").status_code == 200
    # The key's row is cached now; a token with its id but another secret is still refused.
    assert as_key(hearth, f"hk_{made['id']}_forged").get("/api/functions").status_code == 401
    assert hearth.client.get(f"/api/users/{user}/keys").json()["keys"][0]["last_used_at"] is not None
    assert hearth.client.delete(f"/api/keys/{made['id']}").status_code == 204
    revoked = client.get("/api/functions")
    assert revoked.status_code == 401 and "revoked" in revoked.json()["error"]["message"]
    assert as_key(hearth, key[:-1] + ("A" if key[-1] != "A" else "B")).get("/api/functions").status_code == 401


def test_quotas_refuse_deploys_past_them(hearth: HearthServer, fname: str) -> None:
    user = f"q-{fname}"
    make_user(hearth, user, max_functions=2, max_memory_mb=512, max_sandboxes=6)
    client = as_key(hearth, make_key(hearth, user, "deploy")["key"])
    assert client.post("/api/functions", json=fn_body(f"{fname}-a", memory_mb=128, max_instances=2)).status_code == 201
    too_much = client.post("/api/functions", json=fn_body(f"{fname}-b", memory_mb=128, max_instances=3))
    assert too_much.status_code == 403 and too_much.json()["error"]["quota"] == "max_memory_mb"
    assert client.post("/api/functions", json=fn_body(f"{fname}-b", memory_mb=64, max_instances=3)).status_code == 201
    third = client.post("/api/functions", json=fn_body(f"{fname}-c", memory_mb=32, max_instances=1))
    assert third.status_code == 403 and third.json()["error"]["quota"] == "max_functions"
    grow = client.patch(f"/api/functions/{fname}-a", json={"max_instances": 4})
    assert grow.status_code == 403 and grow.json()["error"]["quota"] in ("max_sandboxes", "max_memory_mb")
    assert client.get(f"/api/functions/{fname}-a").json()["version"] == 1  # refused: no new version
    raised = hearth.client.patch(f"/api/users/{user}", json={"max_functions": 3})
    assert raised.status_code == 200 and raised.json()["max_functions"] == 3 and raised.json()["functions"] == 2
    assert client.post("/api/functions", json=fn_body(f"{fname}-c", memory_mb=32, max_instances=1)).status_code == 201


def test_a_users_request_rate_is_limited(hearth: HearthServer, fname: str) -> None:
    user = f"r-{fname}"
    make_user(hearth, user, max_requests_per_s=2)
    key = make_key(hearth, user, "deploy", "invoke")["key"]
    client = as_key(hearth, key)
    statuses = [client.get("/api/functions").status_code for _ in range(10)]
    assert statuses[:2] == [200, 200] and statuses.count(429) >= 5, statuses
    limited = client.get("/api/functions")
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"]["type"] == "TooManyRequests" and "2 requests per second" in limited.text
    on_lambda = httpx.get(
        f"{hearth.base_url}/2015-03-31/functions", headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    assert on_lambda.status_code == 429 and on_lambda.headers["x-amzn-ErrorType"] == "TooManyRequestsException"
    assert all(hearth.client.get("/api/functions").status_code == 200 for _ in range(10))  # the admin: no limit
    time.sleep(1.1)  # the bucket refills at 2 per second
    assert client.get("/api/functions").status_code == 200
    assert hearth.client.patch(f"/api/users/{user}", json={"max_requests_per_s": None}).status_code == 200
    assert all(client.get("/api/functions").status_code == 200 for _ in range(10))
    assert hearth.client.patch(f"/api/users/{user}", json={"max_requests_per_s": 0}).status_code == 422


def test_key_protected_trigger_needs_an_invoke_key_of_the_owner(hearth: HearthServer, fname: str) -> None:
    owner, other = f"o-{fname}", f"x-{fname}"
    make_user(hearth, owner)
    make_user(hearth, other)
    deployer = as_key(hearth, make_key(hearth, owner, "deploy")["key"])
    assert deployer.post("/api/functions", json=fn_body(fname, auth="key")).status_code == 201
    url = f"{hearth.base_url}/fn/{owner}/{fname}"
    assert httpx.post(url, json={}, timeout=30).status_code == 401
    assert as_key(hearth, make_key(hearth, owner, "invoke")["key"]).post(url, json={"who": "k"}).status_code == 200
    assert as_key(hearth, make_key(hearth, other, "invoke")["key"]).post(url, json={}).status_code == 404
    assert as_key(hearth, make_key(hearth, owner, "read")["key"]).post(url, json={}).status_code == 403
    assert hearth.client.post(url, json={}).status_code == 200  # the admin key works everywhere


def test_users_keys_and_ownership_survive_a_restart(fresh_hearth: HearthServer, fname: str) -> None:
    make_user(fresh_hearth, "carol", max_functions=1)
    key = make_key(fresh_hearth, "carol", "deploy", "invoke")["key"]
    assert as_key(fresh_hearth, key).post("/api/functions", json=fn_body(fname)).status_code == 201
    fresh_hearth.restart()
    carol = as_key(fresh_hearth, key)
    assert carol.get(f"/api/functions/{fname}").json()["owner"] == "carol"
    assert carol.post(f"/api/functions/{fname}/invoke", json={}).status_code == 200
    assert carol.post("/api/functions", json=fn_body(f"{fname}-2")).status_code == 403
    paths = fresh_hearth.client.get("/openapi.json").json()["paths"]
    assert {"/api/users", "/api/users/{user}/keys", "/api/keys/{key_id}"} <= set(paths)
