"""Liveness and readiness."""

from __future__ import annotations

import asyncio
import os
import shutil

from fastapi import APIRouter
from fastapi.responses import ORJSONResponse
from sqlalchemy import text

from hearth.api.dependencies import State

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: State) -> ORJSONResponse:
    checks: dict[str, dict[str, object]] = {}
    for name, backend in state.engine.backends.items():
        ok, reason = await asyncio.to_thread(backend.availability)
        checks[f"backend:{name}"] = {"ok": ok, "detail": reason}

    def database() -> tuple[bool, str]:
        try:
            with state.sessions() as session:
                session.execute(text("SELECT 1"))
        except Exception as exc:
            return False, f"database not reachable: {exc}"
        data_dir = state.settings.resolved_data_dir
        if not os.access(data_dir, os.W_OK):
            return False, f"data dir {data_dir} is not writable"
        free = shutil.disk_usage(data_dir).free
        if free < 64 * 1024 * 1024:
            return False, f"only {free // 2**20} MiB free in the data dir"
        return True, "ok"

    ok, detail = await asyncio.to_thread(database)
    checks["database"] = {"ok": ok, "detail": detail}
    default = checks.get(f"backend:{state.settings.default_backend}", {"ok": False})
    ready = bool(checks["database"]["ok"] and default["ok"])
    body = {"ready": ready, "checks": checks, "stem_cells": state.engine.stem_cells.counts()}
    return ORJSONResponse(body, status_code=200 if ready else 503)
