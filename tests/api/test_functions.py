"""Function CRUD and validation through the real API."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from hearth.testing import HearthServer

PY = "def handler(event, context):\n    return {'echo': event}\n"


def test_create_sets_defaults_and_version_one(hearth: HearthServer, fname: str) -> None:
    fn = hearth.deploy(fname, PY)
    assert fn["version"] == 1
    assert fn["route"] == f"/{fname}"
    assert (fn["handler"], fn["timeout_s"], fn["memory_mb"], fn["cpus"]) == ("handler", 30.0, 128, 0.5)
    assert (fn["backend"], fn["min_warm"], fn["max_instances"], fn["concurrency"]) == ("docker", 0, 10, 1)
    assert len(fn["code_sha256"]) == 64
    assert "created_at" in fn and "updated_at" in fn


def test_duplicate_name_and_route_conflict(hearth: HearthServer, fname: str) -> None:
    hearth.deploy(fname, PY, route=f"/{fname}-r")
    again = hearth.client.post("/api/functions", json={"name": fname, "language": "python", "code": PY})
    assert again.status_code == 409
    assert again.json()["error"]["type"] == "Conflict"
    same_route = hearth.client.post(
        "/api/functions",
        json={"name": fname + "-2", "language": "python", "code": PY, "route": f"/{fname}-r"},
    )
    assert same_route.status_code == 409


INVALID: list[tuple[str, Any]] = [
    ("name", "Upper"),
    ("name", ""),
    ("name", "a" * 64),
    ("name", "under_score"),
    ("name", "../etc"),
    ("language", "ruby"),
    ("code", ""),
    ("code", 42),
    ("handler", "1abc"),
    ("handler", "../x.handler"),
    ("handler", "a..b"),
    ("route", "no-slash"),
    ("route", "/a/../b"),
    ("route", "/has space"),
    ("timeout_s", 0),
    ("timeout_s", 901),
    ("timeout_s", "soon"),
    ("memory_mb", 16),
    ("memory_mb", 5000),
    ("cpus", 0.01),
    ("cpus", 9),
    ("env", {"1BAD": "x"}),
    ("env", {"HEARTH_SECRET": "x"}),
    ("env", {"A": 1}),
    ("env", {f"K{i}": "v" for i in range(200)}),
    ("env", {"BIG": "x" * 40000}),
    ("backend", "nope"),
    ("min_warm", -1),
    ("min_warm", 11),  # more than max_instances (10)
    ("max_instances", 0),
    ("concurrency", 0),
    ("auth", "maybe"),
    ("network", "sometimes"),
    ("unknown_field", 1),
]


@pytest.mark.parametrize(("field", "value"), INVALID, ids=[f"{f}={str(v)[:12]}" for f, v in INVALID])
def test_validation_errors_name_the_field(hearth: HearthServer, fname: str, field: str, value: Any) -> None:
    body = {"name": fname, "language": "python", "code": PY, field: value}
    response = hearth.client.post("/api/functions", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "ValidationError"
    assert any(f["field"].split(".")[0] == field for f in error["fields"]), error


def test_code_over_the_size_limit_is_refused(hearth: HearthServer, fname: str) -> None:
    big = "x = 1\n" * 200_000  # 1.2 MB > 1 MiB default
    response = hearth.client.post("/api/functions", json={"name": fname, "language": "python", "code": big})
    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == "code"


def test_malformed_json_body_is_a_clear_4xx(hearth: HearthServer) -> None:
    response = hearth.client.post("/api/functions", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "ValidationError"


def test_list_get_update_patch_versions_delete(hearth: HearthServer, fname: str) -> None:
    hearth.deploy(fname, PY, env={"A": "1"})
    listed = hearth.client.get("/api/functions").json()["functions"]
    assert fname in [f["name"] for f in listed]
    got = hearth.client.get(f"/api/functions/{fname}").json()
    assert got["code"] == PY and got["env"] == {"A": "1"}

    new_code = "def handler(event, context):\n    return 'v2'\n"
    put = hearth.client.put(f"/api/functions/{fname}", json={"language": "python", "code": new_code, "timeout_s": 5})
    assert put.status_code == 200, put.text
    assert put.json()["version"] == 2
    assert put.json()["env"] == {}  # full replace: unspecified settings return to defaults
    assert put.json()["timeout_s"] == 5

    patch = hearth.client.patch(f"/api/functions/{fname}", json={"memory_mb": 256})
    assert patch.status_code == 200, patch.text
    assert (patch.json()["version"], patch.json()["memory_mb"], patch.json()["timeout_s"]) == (3, 256, 5)
    assert hearth.client.get(f"/api/functions/{fname}").json()["code"] == new_code  # code kept by PATCH

    versions = hearth.client.get(f"/api/functions/{fname}/versions").json()
    assert [v["version"] for v in versions] == [1, 2, 3]

    rename = hearth.client.put(f"/api/functions/{fname}", json={"name": "other", "language": "python", "code": PY})
    assert rename.status_code == 422

    assert hearth.client.delete(f"/api/functions/{fname}").status_code == 204
    assert hearth.client.get(f"/api/functions/{fname}").status_code == 404
    assert hearth.client.delete(f"/api/functions/{fname}").status_code == 404
    assert hearth.invoke(fname).status_code == 404


def test_patch_cannot_change_language_without_code(hearth: HearthServer, fname: str) -> None:
    hearth.deploy(fname, PY)
    response = hearth.client.patch(f"/api/functions/{fname}", json={"language": "javascript"})
    assert response.status_code == 422


def test_unknown_function_is_404_json(hearth: HearthServer) -> None:
    response = hearth.client.get("/api/functions/does-not-exist")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "NotFound"
    assert httpx.get(f"{hearth.base_url}/fn/nothing-here").status_code == 404


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic abc", "Bearer"])
def test_api_requires_the_key(hearth: HearthServer, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    for method, path in [
        ("GET", "/api/functions"),
        ("POST", "/api/functions"),
        ("POST", "/api/functions/x/invoke"),
    ]:
        response = httpx.request(method, f"{hearth.base_url}{path}", headers=headers, json={})
        assert response.status_code == 401, (method, path, response.text)
        assert response.json()["error"]["type"] == "Unauthorized"


def test_health_ready_and_openapi(hearth: HearthServer) -> None:
    assert httpx.get(f"{hearth.base_url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{hearth.base_url}/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["database"]["ok"] is True
    spec = httpx.get(f"{hearth.base_url}/openapi.json").json()
    assert "/api/functions" in spec["paths"] and "/api/functions/{name}/invoke" in spec["paths"]
