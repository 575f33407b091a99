"""Hearth on PostgreSQL (the multi-node store): a throwaway cluster of Debian's postgresql, reached
over its Unix socket only, and a real Hearth server on it: migrations, functions, invocations with
their records and metrics, async jobs, users and namespaces, and a restart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from hearth.testing import HearthServer

HELLO = (
    "def handler(event, context):\n    print('hi', event.get('who'))\n    return {'hello': event.get('who', 'world')}\n"
)


@pytest.fixture
def pg_hearth(tmp_path: Path, postgres_url: str, runtime_images: dict[str, str]) -> Iterator[HearthServer]:
    server = HearthServer(tmp_path / "data", env={"HEARTH_DATABASE_URL": postgres_url})
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.stop()


def test_hearth_runs_on_postgresql(pg_hearth: HearthServer, postgres_url: str, fname: str) -> None:
    server = pg_hearth
    server.deploy(fname, HELLO)
    for who in ("a", "b", "c"):
        assert server.invoke(fname, {"who": who}).json() == {"hello": who}
    assert server.client.patch(f"/api/functions/{fname}", json={"memory_mb": 96}).json()["version"] == 2
    logs = server.client.get(f"/api/functions/{fname}/logs").json()["lines"]  # flushes the records
    assert [line["line"] for line in logs][-1] == "hi c"
    records = server.client.get("/api/invocations", params={"function": fname}).json()["invocations"]
    assert len(records) == 3 and {r["status"] for r in records} == {"ok"}
    summary = server.client.get("/api/metrics/summary", params={"window": "1h"}).json()
    row = next(r for r in summary["functions"] if r["function"] == fname)
    assert row["invocations"] == 3 and row["p50_ms"] is not None
    assert server.client.get(f"/api/functions/{fname}/metrics", params={"window": "1h"}).status_code == 200
    assert "hearth_invocations_total" in httpx.get(f"{server.base_url}/metrics", timeout=30).text

    queued = server.client.post(f"/api/functions/{fname}/invoke", params={"mode": "async"}, json={"who": "q"})
    assert queued.status_code == 202, queued.text
    job = server.wait_job(queued.json()["invocation_id"])
    assert job["status"] == "succeeded" and job["result"] == {"hello": "q"}

    user = f"pg-{fname}"
    assert server.client.post("/api/users", json={"name": user, "max_functions": 1}).status_code == 201
    key = server.client.post(f"/api/users/{user}/keys", json={"scopes": ["deploy", "invoke"]}).json()["key"]
    alice = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    made = alice.post("/api/functions", json={"name": fname, "language": "python", "code": HELLO})
    assert made.status_code == 201 and made.json()["name"] == f"{user}.{fname}", made.text
    assert alice.post(f"/api/functions/{fname}/invoke", json={"who": "u"}).json() == {"hello": "u"}
    second = alice.post("/api/functions", json={"name": f"{fname}-2", "language": "python", "code": HELLO})
    assert second.status_code == 403 and second.json()["error"]["quota"] == "max_functions"

    server.restart()
    assert server.invoke(fname, {"who": "again"}).json() == {"hello": "again"}
    assert alice.get(f"/api/functions/{fname}").json()["owner"] == user

    # it all lives in PostgreSQL, not in a SQLite file beside it
    assert not list(server.data_dir.glob("*.db"))
    with create_engine(postgres_url).connect() as db:
        names = set(db.scalars(text("SELECT name FROM functions")))
        revisions = set(db.scalars(text("SELECT version_num FROM alembic_version")))
    assert names == {fname, f"{user}.{fname}"} and "0011_user_capabilities" in revisions
