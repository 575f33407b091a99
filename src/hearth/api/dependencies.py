"""What the API's handlers take from the app, as typed FastAPI dependencies.

`state: State` in a handler's signature gives the shared `HearthState` the app's lifespan built;
helpers that only have the request call `hearth_state(request)`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from hearth.api.builds.service import BuildService
from hearth.api.functions.service import FunctionService
from hearth.api.state import HearthState


def hearth_state(request: Request) -> HearthState:
    return request.app.state.hearth  # type: ignore[no-any-return]


def function_service(request: Request) -> FunctionService:
    return request.app.state.functions  # type: ignore[no-any-return]


def build_service(request: Request) -> BuildService:
    return hearth_state(request).builds


State = Annotated[HearthState, Depends(hearth_state)]
Functions = Annotated[FunctionService, Depends(function_service)]
Builds = Annotated[BuildService, Depends(build_service)]
