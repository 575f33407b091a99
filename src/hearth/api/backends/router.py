"""/api/backends: the isolation backends of this Hearth, whether each works on this host, and what a start costs."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request

from hearth.api.auth import require_api_key
from hearth.api.backends.schemas import BackendList, BackendOut, RuntimeStartCost, StartCost
from hearth.api.dependencies import State
from hearth.api.errors import ApiError
from hearth.api.state import HearthState
from hearth.engine.sandbox import Backend

router = APIRouter(prefix="/api/backends", tags=["backends"], dependencies=[Depends(require_api_key)])


def describe(state: HearthState, backend: Backend) -> BackendOut:
    """Runs in a worker thread: availability and details may ask dockerd or run a binary."""
    available, reason = backend.availability()
    try:
        details = backend.describe()
    except Exception as exc:  # a backend's details never make the listing fail
        details = {"error": f"{type(exc).__name__}: {exc}"}
    costs = backend.start_costs
    stems = state.engine.stem_cells.counts()
    prefix = f"{backend.name}/"
    return BackendOut(
        name=backend.name,
        available=available,
        reason=None if available else reason,
        default=backend.name == state.settings.default_backend,
        kind=backend.kind,
        details=details,
        start_cost=StartCost(
            by_runtime={rt: RuntimeStartCost(**figures) for rt, figures in costs.summary().items()},  # type: ignore[arg-type]
            starts=costs.started,
            failures=costs.failed,
            last_error=costs.last_error,
        ),
        stem_cells={key.removeprefix(prefix): n for key, n in stems.items() if key.startswith(prefix)},
        runtimes=backend.runtimes() if available else [],
    )


@router.get("", response_model=BackendList, summary="Every isolation backend: available or why not, start cost")
async def list_backends(state: State, request: Request) -> BackendList:
    backends = await asyncio.gather(
        *(asyncio.to_thread(describe, state, backend) for backend in state.engine.backends.values())
    )
    return BackendList(backends=list(backends))


# The path parameter is not called `name`: the auth layer reads `name` as a function's (ownership check).
@router.get("/{backend}", response_model=BackendOut, summary="One isolation backend")
async def get_backend(state: State, backend: str, request: Request) -> BackendOut:
    found = state.engine.backends.get(backend)
    if found is None:
        known = ", ".join(sorted(state.engine.backends))
        raise ApiError(404, "NotFound", f"backend {backend!r} does not exist (known: {known})")
    return await asyncio.to_thread(describe, state, found)
