"""Alembic migrations on a real SQLite file: the newest schema matches the models, and upgrading a
database from before namespaces moves users' functions (and their records) to their keys."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

from hearth.store.db import MIGRATIONS_DIR, make_engine, migrate
from hearth.store.models import Base


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url)
    return config


def test_newest_schema_matches_the_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hearth.db'}"
    migrate(url)
    with make_engine(url).connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def test_users_functions_move_into_their_namespaces(tmp_path: Path) -> None:
    path = tmp_path / "hearth.db"
    url = f"sqlite:///{path}"
    config = alembic_config(url)
    command.upgrade(config, "0006_jobs")
    command.upgrade(config, "0007_users")
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO users (name, created_at) VALUES ('alice', '2026-01-01')")
        for name, owner, route in (("hello", "alice", "/hello"), ("other", "admin", "/other")):
            db.execute(
                "INSERT INTO functions (name, route, current_version, owner, created_at, updated_at)"
                " VALUES (?, ?, 1, ?, '2026-01-01', '2026-01-01')",
                (name, route, owner),
            )
            db.execute(
                "INSERT INTO invocations (id, function_name, version, mode, started_at, duration_ms, queue_ms,"
                " status, backend, stdout, stderr, logs_truncated, request_bytes, response_bytes)"
                " VALUES (?, ?, 1, 'sync', 0, 1, 0, 'ok', 'docker', '', '', 0, 0, 0)",
                (f"inv-{name}", name),
            )
            db.execute(
                "INSERT INTO jobs (id, function_name, source, event, status, attempts, runs, max_attempts,"
                " interruptions, run_at, created_at, dead_letter, callback_attempts)"
                " VALUES (?, ?, 'api', '{}', 'queued', 0, 0, 3, 0, 0, 0, 0, 0)",
                (f"job-{name}", name),
            )
    migrate(url)
    with sqlite3.connect(path) as db:
        functions = dict(db.execute("SELECT name, route FROM functions").fetchall())
        invocations = dict(db.execute("SELECT id, function_name FROM invocations").fetchall())
        jobs = dict(db.execute("SELECT id, function_name FROM jobs").fetchall())
    # a user's old route stays where it was: clients calling it keep working
    assert functions == {"alice.hello": "/hello", "other": "/other"}
    assert invocations == {"inv-hello": "alice.hello", "inv-other": "other"}
    assert jobs == {"job-hello": "alice.hello", "job-other": "other"}
