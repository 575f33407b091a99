"""/api/functions: create, list, get, replace, patch, delete, versions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from hearth.api.auth import principal_of, require_api_key
from hearth.api.dependencies import Functions
from hearth.api.functions.schemas import (
    FunctionCreate,
    FunctionList,
    FunctionOut,
    FunctionPatch,
    FunctionReplace,
    FunctionVersionOut,
)

router = APIRouter(prefix="/api/functions", tags=["functions"], dependencies=[Depends(require_api_key)])


@router.post("", status_code=201, response_model=FunctionOut)
async def create_function(body: FunctionCreate, svc: Functions, request: Request) -> FunctionOut:
    return await svc.create(body, caller=principal_of(request))


@router.get("", response_model=FunctionList)
async def list_functions(svc: Functions, request: Request) -> FunctionList:
    principal = principal_of(request)
    return FunctionList(functions=await svc.list(None if principal.is_admin else principal.user))


@router.get("/{name}", response_model=FunctionOut)
async def get_function(name: str, svc: Functions) -> FunctionOut:
    return await svc.get(name)


@router.put("/{name}", response_model=FunctionOut)
async def replace_function(name: str, body: FunctionReplace, svc: Functions, request: Request) -> FunctionOut:
    return await svc.replace(name, body, caller=principal_of(request))


@router.patch("/{name}", response_model=FunctionOut)
async def patch_function(name: str, body: FunctionPatch, svc: Functions, request: Request) -> FunctionOut:
    return await svc.patch(name, body, caller=principal_of(request))


@router.delete("/{name}", status_code=204, response_class=Response)
async def delete_function(name: str, svc: Functions) -> Response:
    await svc.delete(name)
    return Response(status_code=204)


@router.get("/{name}/versions", response_model=list[FunctionVersionOut])
async def list_versions(name: str, svc: Functions) -> list[FunctionVersionOut]:
    return await svc.versions(name)
