"""Response bodies of GET /api/backends."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class RuntimeStartCost(BaseModel):
    p50_ms: float = Field(description="median of the recent sandbox starts of this runtime (at most 50)")
    last_ms: float = Field(description="the most recent start")
    samples: int = Field(description="how many recent starts the median is over")
    last_at: float = Field(description="when the most recent start finished (Unix time)")


class StartCost(BaseModel):
    measured: str = Field(
        default="Backend.create: from asking for a sandbox to its agent connected and answering the handshake "
        "(not yet loaded with a function); every start is recorded, stem cells started at boot included",
        description="what the figures measure",
    )
    by_runtime: dict[str, RuntimeStartCost] = Field(
        default_factory=dict, description="per runtime; empty until a sandbox has started on this backend"
    )
    starts: int = Field(default=0, description="sandboxes started since Hearth started")
    failures: int = Field(default=0, description="sandbox starts that failed since Hearth started")
    last_error: str | None = Field(default=None, description="why the last failed start failed")


class BackendOut(BaseModel):
    name: str
    available: bool
    reason: str | None = Field(description="why the backend is not available here (null when it is)")
    default: bool = Field(description="functions that name no backend run here")
    kind: str = Field(description="the isolation technology")
    details: dict[str, Any] = Field(default_factory=dict, description="backend-specific facts (runtime, platform)")
    start_cost: StartCost
    stem_cells: dict[str, int] = Field(default_factory=dict, description="ready stem cells by runtime")
    runtimes: list[str] = Field(default_factory=list, description="runtimes it can run here now (GET /api/runtimes)")


class BackendList(BaseModel):
    backends: list[BackendOut]
