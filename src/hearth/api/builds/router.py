"""/api/functions/{name}/builds (dependency builds) and /api/functions/{name}/code (the bundle as a zip)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import ValidationError

from hearth.api.auth import principal_of, require_api_key
from hearth.api.bodies import read_capped_body
from hearth.api.builds.schemas import BuildList, BuildOut
from hearth.api.dependencies import Builds, Functions, State
from hearth.api.errors import ApiError, field_error, not_found
from hearth.api.functions.schemas import FunctionCreate, FunctionOut, FunctionPatch
from hearth.api.namespaces import split_key
from hearth.packaging.bundle import pack_files

router = APIRouter(prefix="/api/functions", tags=["builds"], dependencies=[Depends(require_api_key)])

ZIP_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "description": "the bundle: a zip as the raw body, or multipart with a `zip` file part and an optional "
        "`settings` part (JSON: function settings; `language` creates the function if it does not exist)",
        "content": {
            "application/zip": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "zip": {"type": "string", "format": "binary"},
                        "settings": {"type": "string", "description": "JSON object of function settings"},
                    },
                    "required": ["zip"],
                }
            },
        },
    }
}


@router.get("/{name}/builds", response_model=BuildList)
async def list_builds(name: str, svc: Builds, limit: Annotated[int, Query(ge=1, le=100)] = 20) -> BuildList:
    """The function's dependency builds, newest first (without their logs)."""
    return BuildList(builds=await svc.list(name, limit))


@router.get("/{name}/builds/{build_id}", response_model=BuildOut, responses={404: {"description": "no such build"}})
async def get_build(name: str, build_id: str, svc: Builds, log_offset: Annotated[int, Query(ge=0)] = 0) -> BuildOut:
    """One build with its install log from `log_offset` on (poll with the previous `log_size` to follow it)."""
    return await svc.get(name, build_id, log_offset)


@router.get(
    "/{name}/code",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}, "description": "the current version's files as a zip"}},
)
async def download_code(name: str, request: Request, state: State) -> Response:
    spec = state.registry.get(name)
    if spec is None:
        raise not_found(name)

    def read() -> dict[str, bytes]:
        root = spec.code_dir
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    data = pack_files(await asyncio.to_thread(read))
    headers = {"Content-Disposition": f'attachment; filename="{name}-v{spec.version}.zip"'}
    return Response(data, media_type="application/zip", headers=headers)


@router.put(
    "/{name}/code",
    response_model=FunctionOut,
    openapi_extra=ZIP_UPLOAD_BODY,
    responses={201: {"model": FunctionOut, "description": "created"}, 404: {"description": "no such function"}},
)
async def upload_code(name: str, request: Request, response: Response, svc: Functions, state: State) -> FunctionOut:
    """A new version with this bundle (other settings kept); creates the function if `settings` has `language`."""
    data, settings = await read_upload(request, state.settings.max_zip_bytes)
    body = {**settings, "zip_base64": base64.b64encode(data).decode("ascii")}
    if state.registry.get(name) is None and "language" in settings:
        response.status_code = 201
        namespace, short_name = split_key(name)
        created = validated(FunctionCreate, {**body, "name": short_name})
        return await svc.create(created, caller=principal_of(request), owner=namespace)
    body.pop("name", None)
    return await svc.patch(name, validated(FunctionPatch, body), caller=principal_of(request))


def validated(model: type[Any], body: dict[str, Any]) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        fields = [
            {"field": ".".join(str(p) for p in err["loc"]) or "settings", "message": err["msg"]} for err in exc.errors()
        ]
        message = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        raise ApiError(422, "ValidationError", message, fields=fields) from None


async def read_upload(request: Request, limit: int) -> tuple[bytes, dict[str, Any]]:
    """(zip bytes, settings) from a multipart form or a raw application/zip body."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=8, max_part_size=1024 * 1024)
        except Exception as exc:  # malformed multipart: Starlette raises several kinds
            raise ApiError(400, "BadRequest", f"cannot read the multipart body: {exc}") from None
        upload = form.get("zip")
        if upload is None or isinstance(upload, str):
            raise field_error("zip", "a file part named 'zip' is required")
        data = await upload.read(limit + 1)
        settings_text = form.get("settings")
        settings: Any = {}
        if settings_text is not None:
            if not isinstance(settings_text, str):
                raise field_error("settings", "must be a text part holding a JSON object")
            try:
                settings = json.loads(settings_text)
            except ValueError as exc:
                raise field_error("settings", f"is not valid JSON: {exc}") from None
            if not isinstance(settings, dict):
                raise field_error("settings", "must be a JSON object")
    elif content_type in ("application/zip", "application/octet-stream", "application/x-zip-compressed"):
        data = await read_limited(request, limit)
        settings = {}
    else:
        raise ApiError(
            415, "UnsupportedMediaType", "send the zip as multipart/form-data (part 'zip') or application/zip"
        )
    if len(data) > limit:
        raise ApiError(413, "PayloadTooLarge", f"the zip is over the limit of {limit} bytes")
    return data, settings


async def read_limited(request: Request, limit: int) -> bytes:
    return await read_capped_body(
        request, limit, lambda: ApiError(413, "PayloadTooLarge", f"the zip is over the limit of {limit} bytes")
    )
