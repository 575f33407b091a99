"""Unit tests of the pool, the batcher and the engine: a FakeBackend, a ManualClock, no Docker, no sleeps.

Time moves only when a test calls `clock.advance`; `settle()` lets every task that can run, run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from hearth.engine.backends.fake import FakeBackend
from hearth.engine.clock import ManualClock
from hearth.engine.sandbox import FunctionSpec

Settle = Callable[[], Awaitable[None]]
MakeSpec = Callable[..., FunctionSpec]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fake(clock: ManualClock) -> FakeBackend:
    return FakeBackend(clock)


async def _settle() -> None:
    # Enough loop turns for a chain of tasks and callbacks (acquire → start → hand-over → reply) to finish.
    for _ in range(100):
        await asyncio.sleep(0)


@pytest.fixture
def settle() -> Settle:
    return _settle


def make_spec(name: str = "f", version: int = 1, **settings: Any) -> FunctionSpec:
    settings.setdefault("backend", "fake")
    return FunctionSpec(name, version, "python", "handler", Path("/nonexistent"), **settings)


@pytest.fixture
def spec() -> MakeSpec:
    """`spec(name, version, **FunctionSpec fields)`: a function version on the fake backend."""
    return make_spec


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A broken hand-off leaves a call waiting for a clock nobody advances: fail in seconds, not at the 300 s default.
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.timeout(20))
