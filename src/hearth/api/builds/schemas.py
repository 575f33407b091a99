"""Response bodies of the builds API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

BuildStatus = Literal["running", "succeeded", "failed"]


class BuildOut(BaseModel):
    id: str
    function: str
    language: str
    manifest: str = Field(description="the dependency list that was installed: requirements.txt or package.json")
    layer_sha256: str = Field(description="key of the dependency layer: identical lists share one layer")
    status: BuildStatus
    cached: bool = Field(description="the layer existed already: nothing was installed")
    version: int | None = Field(description="the function version this build went into, once deployed")
    error: str | None = None
    layer_bytes: int | None = None
    layer_files: int | None = None
    created_at: datetime
    finished_at: datetime | None = None
    duration_ms: float | None = None
    log: str | None = Field(default=None, description="install output from `log_offset` on; only on GET of one build")
    log_size: int = Field(default=0, description="length of the whole log so far, for polling with log_offset")


class BuildList(BaseModel):
    builds: list[BuildOut]
