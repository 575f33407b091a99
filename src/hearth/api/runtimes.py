"""/api/runtimes: the runtimes this Hearth offers (python3.11, nodejs20.x, ...) and which backends run each."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from hearth.api.auth import require_api_key
from hearth.api.dependencies import State
from hearth.api.state import HearthState
from hearth.images import catalog

router = APIRouter(prefix="/api/runtimes", tags=["backends"], dependencies=[Depends(require_api_key)])


class RuntimeOut(BaseModel):
    name: str = Field(description="Lambda's runtime identifier: the `runtime` setting of a function")
    language: str = Field(description="python, javascript or provided (the `language` setting)")
    aliases: list[str] = Field(default_factory=list, description="Lambda's other names for it, accepted as `runtime`")
    default: bool = Field(description="what `language` alone means")
    debian_suite: str = Field(description="the Debian release its image is built from")
    packages: list[str] = Field(description="the Debian packages of its image")
    aws_sdk: str = Field(description="the AWS SDK it ships: boto3, the AWS SDK for JavaScript v3, or none (provided)")
    backends: list[str] = Field(description="the backends that can run it on this host now (empty: unavailable)")


class RuntimeList(BaseModel):
    runtimes: list[RuntimeOut]


def offered(state: HearthState) -> dict[str, list[str]]:
    """runtime -> the available backends that run it (runs in a worker thread: may ask dockerd)."""
    by_runtime: dict[str, list[str]] = {name: [] for name in catalog.RUNTIMES}
    for backend in state.engine.backends.values():
        if not backend.availability()[0]:
            continue
        for runtime in backend.runtimes():
            by_runtime.setdefault(runtime, []).append(backend.name)
    return by_runtime


@router.get("", response_model=RuntimeList, summary="Every runtime: its Debian build and the backends that run it here")
async def list_runtimes(state: State) -> RuntimeList:
    by_runtime = await asyncio.to_thread(offered, state)
    return RuntimeList(
        runtimes=[
            RuntimeOut(
                name=image.name,
                language=image.language,
                aliases=[alias for alias, target in catalog.ALIASES.items() if target == image.name],
                default=image.name == catalog.default_runtime(image.language),
                debian_suite=image.suite,
                packages=list(image.packages),
                aws_sdk="boto3"
                if image.language == "python"
                else "AWS SDK for JavaScript v3"
                if image.aws_sdk
                else "none",
                backends=by_runtime.get(image.name, []),
            )
            for image in catalog.CATALOG.values()
        ]
    )
