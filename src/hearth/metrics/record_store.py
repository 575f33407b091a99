"""Storing a batch of invocation records: the rows themselves and their rollups, in one transaction.

Runs in the invocation writer's process (hearth.metrics.writer), away from the server's event loop.
"""

from __future__ import annotations

import functools
import itertools
import operator
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from hearth.metrics.aggregate import upsert_rollups
from hearth.store.models import Invocation

COLUMNS = tuple(column.name for column in Invocation.__table__.columns)
# What the ORM would fill in for a key a row lacks (a column's scalar default), else NULL.
DEFAULTS = {
    column.name: column.default.arg
    for column in Invocation.__table__.columns
    if column.default is not None and column.default.is_scalar
}
PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}
# Rows per INSERT statement: 400 x 21 columns stays under SQLite's 32,766 bound parameters (3.32+) and
# PostgreSQL's 65,535.
ROWS_PER_INSERT = 400
_row_values = operator.itemgetter(*COLUMNS)


@functools.lru_cache(maxsize=4)
def _driver_insert(paramstyle: str, rows: int) -> str | None:
    """An INSERT of `rows` rows in one statement, in the driver's own SQL (SQLite's `?`, psycopg's `%s`);
    None for another parameter style.

    One statement binds every value in C, where an executemany (or SQLAlchemy's per-row parameter
    processing) costs Python work and a statement step per row."""
    mark = PLACEHOLDERS.get(paramstyle)
    if mark is None:
        return None
    row = f"({', '.join([mark] * len(COLUMNS))})"
    return f"INSERT INTO invocations ({', '.join(COLUMNS)}) VALUES {', '.join([row] * rows)}"


def _values(row: dict[str, Any]) -> tuple[Any, ...]:
    try:
        return _row_values(row)
    except KeyError:  # a row without some columns: they take the column's default
        return tuple(row.get(name, DEFAULTS.get(name)) for name in COLUMNS)


def store_records(sessions: sessionmaker[Session], rows: list[dict[str, Any]]) -> None:
    """Insert `rows` and fold them into their rollups: both or neither."""
    with sessions.begin() as session:
        connection = session.connection()
        paramstyle = connection.dialect.paramstyle
        for start in range(0, len(rows), ROWS_PER_INSERT):
            chunk = rows[start : start + ROWS_PER_INSERT]
            insert = _driver_insert(paramstyle, len(chunk))
            if insert is None:
                session.execute(Invocation.__table__.insert(), chunk)
            else:
                connection.exec_driver_sql(insert, tuple(itertools.chain.from_iterable(map(_values, chunk))))
        upsert_rollups(session, rows)
