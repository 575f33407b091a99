"""Lambda REST API routes (API version 2015-03-31) over Hearth's function service and engine.

Not part of Hearth's OpenAPI schema: the contract is AWS's, and errors have its shape (see errors.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException

from hearth.api.auth import Principal
from hearth.api.builds.service import collect_files
from hearth.api.dependencies import State, function_service, hearth_state
from hearth.api.errors import ApiError
from hearth.api.functions.schemas import FunctionCreate, FunctionOut, FunctionPatch
from hearth.api.lambda_api import invoke as lambda_invoke
from hearth.api.lambda_api.auth import require_aws_auth
from hearth.api.lambda_api.errors import LambdaError, error_response, from_api_error, invalid, not_found
from hearth.api.lambda_api.mapping import (
    LATEST,
    FunctionRef,
    arn,
    check_environment,
    check_name,
    check_qualifier,
    check_runtime,
    configuration,
    handler_to_hearth,
    language_of,
    parse_function_name,
)
from hearth.api.lambda_api.unsupported import API_VERSIONS, unsupported
from hearth.api.namespaces import resolve, split_key

log = logging.getLogger(__name__)
PREFIX = "/2015-03-31/functions"
LAMBDA_DEFAULT_TIMEOUT_S = 3
LAMBDA_DEFAULT_MEMORY_MB = 128


class LambdaRoute(APIRoute):
    """Every failure of a Lambda route answers in Lambda's error shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await original(request)
            except LambdaError as exc:
                return error_response(exc)
            except ApiError as exc:
                return error_response(from_api_error(exc))
            except (RequestValidationError, ValidationError) as exc:
                return error_response(invalid(validation_message(exc.errors())))
            except HTTPException as exc:
                return error_response(LambdaError(exc.status_code, "InvalidRequestContentException", str(exc.detail)))
            except Exception:
                log.exception("unexpected error in the Lambda API")
                return error_response(LambdaError(500, "ServiceException", "Hearth failed unexpectedly"))

        return handler


def validation_message(errors: Any) -> str:
    parts = []
    for err in errors:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{loc or 'request'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


router = APIRouter(route_class=LambdaRoute, include_in_schema=False, dependencies=[Depends(require_aws_auth)])


# ----- request bodies (unknown AWS fields are accepted and ignored)
class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class CodeInput(_Loose):
    ZipFile: str | None = None
    S3Bucket: str | None = None
    ImageUri: str | None = None


class EnvironmentInput(_Loose):
    Variables: dict[str, str] = Field(default_factory=dict)


class CreateFunctionInput(_Loose):
    FunctionName: str
    Runtime: str | None = None
    Handler: str | None = None
    Code: CodeInput
    Description: str | None = None
    Timeout: int | None = None
    MemorySize: int | None = None
    Publish: bool = False
    Environment: EnvironmentInput | None = None
    PackageType: str | None = None
    Layers: list[str] | None = None
    Architectures: list[str] | None = None


class UpdateCodeInput(CodeInput):
    Publish: bool = False
    DryRun: bool = False
    RevisionId: str | None = None
    Architectures: list[str] | None = None


class UpdateConfigurationInput(_Loose):
    Runtime: str | None = None
    Handler: str | None = None
    Description: str | None = None
    Timeout: int | None = None
    MemorySize: int | None = None
    Environment: EnvironmentInput | None = None
    RevisionId: str | None = None
    Layers: list[str] | None = None


# ----- helpers
def body_of(request: Request, model: type[BaseModel]) -> Any:
    raw = getattr(request, "_body", b"") or b"{}"
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        if any(err.get("type") == "json_invalid" for err in exc.errors()):
            raise LambdaError(400, "InvalidRequestContentException", "Could not parse request body into json") from None
        raise


def caller(request: Request) -> Principal:
    return request.state.principal  # type: ignore[no-any-return]  # set by require_aws_auth


def key_of(request: Request, name: str) -> str:
    """The function key a FunctionName means for the caller; someone else's function does not exist."""
    who = caller(request)
    key = resolve(who.user, name)
    if not who.sees(split_key(key)[0]):
        raise not_found(name, arn(region(request), account(request), name))
    return key


def shown_name(request: Request, key: str) -> str:
    """A function's name as the caller knows it: bare in their own namespace, qualified elsewhere."""
    namespace, name = split_key(key)
    return name if namespace == caller(request).user else key


def region(request: Request) -> str:
    return str(getattr(request.state, "aws_region", "us-east-1"))


def account(request: Request) -> str:
    return hearth_state(request).settings.lambda_account_id


async def available_runtimes(request: Request) -> list[str]:
    """The runtimes functions created through this API can run on: those of the default backend, here and now."""
    state = hearth_state(request)
    backend = state.engine.backends.get(state.settings.default_backend)
    if backend is None:
        return []
    return await asyncio.to_thread(backend.runtimes)


async def config_of(request: Request, fn: FunctionOut, version: str | None = None) -> dict[str, Any]:
    config = configuration(fn, name=shown_name(request, fn.name), region=region(request), account=account(request))
    if version:
        config["Version"] = version
    return config


async def load(request: Request, ref: FunctionRef) -> FunctionOut:
    try:
        fn = await function_service(request).get(key_of(request, ref.name), with_code=False)
    except ApiError as exc:
        if exc.status == 404:
            raise not_found(ref.name, arn(region(request), account(request), ref.name, ref.qualifier)) from None
        raise
    check_qualifier(ref, fn)
    return fn


def check_supported(*, layers: list[str] | None = None, architectures: list[str] | None = None) -> None:
    if layers:
        raise invalid("Hearth has no Lambda layers: declare dependencies in requirements.txt / package.json")
    if architectures and architectures != ["x86_64"]:
        raise invalid(f"Hearth runs x86_64 only, not {architectures}")


def zip_of(code: CodeInput) -> str:
    if code.S3Bucket or code.ImageUri:
        raise invalid("Hearth takes the code as Code.ZipFile only (no S3 or container images)")
    if not code.ZipFile:
        raise invalid("Code.ZipFile is required")
    return code.ZipFile


def image_of(code: CodeInput) -> str:
    """An Image package's Code.ImageUri: an image in this host's Docker engine (no registry is pulled from)."""
    if not code.ImageUri:
        raise invalid("Code.ImageUri is required for Image packages")
    if code.ZipFile or code.S3Bucket:
        raise invalid("an Image package takes Code.ImageUri only")
    return code.ImageUri


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def check_revision(fn: FunctionOut, wanted: str | None, config: dict[str, Any]) -> None:
    if wanted and wanted != config["RevisionId"]:
        raise LambdaError(412, "PreconditionFailedException", "The Revision Id provided does not match the latest")


def has_field(model: type[BaseModel], name: str) -> bool:
    return name in model.model_fields


# ----- routes
@router.post(PREFIX)
async def create_function(request: Request) -> Response:
    body: CreateFunctionInput = body_of(request, CreateFunctionInput)
    if body.PackageType not in (None, "Zip", "Image"):
        raise invalid("Hearth deploys Zip and Image packages")
    check_supported(layers=body.Layers, architectures=body.Architectures)
    name = check_name(parse_function_name(body.FunctionName).name)
    timeout = body.Timeout if body.Timeout is not None else LAMBDA_DEFAULT_TIMEOUT_S
    settings: dict[str, Any] = {"name": name}
    if body.PackageType == "Image":  # a container image whose entrypoint speaks the Runtime API
        settings.update(language="provided", image=image_of(body.Code))
    else:
        runtime = check_runtime(body.Runtime, await available_runtimes(request))
        language = language_of(runtime)
        if not body.Handler:
            raise invalid("Handler is required for Zip packages")
        settings.update(
            language=language,
            runtime=runtime,
            zip_base64=zip_of(body.Code),
            handler=handler_to_hearth(body.Handler, language),
        )
    settings |= {
        "timeout_s": timeout,
        "memory_mb": body.MemorySize if body.MemorySize is not None else LAMBDA_DEFAULT_MEMORY_MB,
        "env": check_environment(body.Environment.Variables) if body.Environment else {},
    }
    if body.Description and has_field(FunctionCreate, "description"):
        settings["description"] = body.Description
    fn = await function_service(request).create(FunctionCreate.model_validate(settings), caller=caller(request))
    return json_response(await config_of(request, fn, str(fn.version) if body.Publish else None), 201)


@router.get(PREFIX)
@router.get(PREFIX + "/")
async def list_functions(
    request: Request,
    marker: Annotated[str | None, Query(alias="Marker")] = None,
    max_items: Annotated[int, Query(alias="MaxItems", ge=1, le=10000)] = 50,
) -> Response:
    who = caller(request)
    owned = await function_service(request).list(None if who.is_admin else who.user)
    named = sorted((shown_name(request, fn.name), fn) for fn in owned)
    if marker:
        named = [(name, fn) for name, fn in named if name > marker]
    page = named[:max_items]
    body: dict[str, Any] = {"Functions": [await config_of(request, fn) for _, fn in page]}
    if len(named) > max_items:
        body["NextMarker"] = page[-1][0]
    return json_response(body)


@router.get(PREFIX + "/{function_name}")
async def get_function(
    function_name: str, request: Request, qualifier: Annotated[str | None, Query(alias="Qualifier")] = None
) -> Response:
    fn = await load(request, parse_function_name(function_name, qualifier))
    location = str(request.base_url).rstrip("/") + f"/api/functions/{fn.name}/code"
    code = {"RepositoryType": "Hearth", "Location": location}
    if fn.image:  # an Image package: the image as deployed, and the id it resolved to
        code = {"RepositoryType": "Local", "ImageUri": fn.image, "ResolvedImageUri": f"{fn.image}@{fn.image_id}"}
    return json_response(
        {
            "Configuration": await config_of(request, fn),
            "Code": code,
            "Tags": {},
        }
    )


@router.get(PREFIX + "/{function_name}/configuration")
async def get_function_configuration(
    function_name: str, request: Request, qualifier: Annotated[str | None, Query(alias="Qualifier")] = None
) -> Response:
    fn = await load(request, parse_function_name(function_name, qualifier))
    return json_response(await config_of(request, fn))


@router.put(PREFIX + "/{function_name}/code")
async def update_function_code(function_name: str, request: Request) -> Response:
    body: UpdateCodeInput = body_of(request, UpdateCodeInput)
    check_supported(architectures=body.Architectures)
    ref = parse_function_name(function_name)
    fn = await load(request, ref)
    check_revision(fn, body.RevisionId, await config_of(request, fn))
    if fn.image is not None:  # an Image package: a new image, checked as at create
        patch = FunctionPatch.model_validate({"image": image_of(body)})
        updated = fn if body.DryRun else await function_service(request).patch(fn.name, patch)
        return json_response(await config_of(request, updated, str(updated.version) if body.Publish else None))
    patch = FunctionPatch.model_validate({"zip_base64": zip_of(body)})
    if body.DryRun:  # check the bundle, change nothing
        collect_files(fn.language, fn.handler, None, patch.zip_base64, hearth_state(request).settings)
        return json_response(await config_of(request, fn))
    updated = await function_service(request).patch(fn.name, patch, caller=caller(request))
    return json_response(await config_of(request, updated, str(updated.version) if body.Publish else None))


@router.put(PREFIX + "/{function_name}/configuration")
async def update_function_configuration(function_name: str, request: Request) -> Response:
    body: UpdateConfigurationInput = body_of(request, UpdateConfigurationInput)
    check_supported(layers=body.Layers)
    fn = await load(request, parse_function_name(function_name))
    check_revision(fn, body.RevisionId, await config_of(request, fn))
    changes: dict[str, Any] = {}
    if body.Runtime is not None:
        runtime = check_runtime(body.Runtime, await available_runtimes(request))
        if language_of(runtime) != fn.language:
            raise invalid("changing the runtime's language needs new code: use UpdateFunctionCode on a new function")
        changes["runtime"] = runtime
    if body.Handler is not None:
        changes["handler"] = handler_to_hearth(body.Handler, fn.language)
    if body.Timeout is not None:
        changes["timeout_s"] = body.Timeout
    if body.MemorySize is not None:
        changes["memory_mb"] = body.MemorySize
    if body.Environment is not None:
        changes["env"] = check_environment(body.Environment.Variables)
    if body.Description is not None and has_field(FunctionPatch, "description"):
        changes["description"] = body.Description
    patch = FunctionPatch.model_validate(changes)
    updated = await function_service(request).patch(fn.name, patch, caller=caller(request)) if changes else fn
    return json_response(await config_of(request, updated))


@router.delete(PREFIX + "/{function_name}")
async def delete_function(
    function_name: str, request: Request, qualifier: Annotated[str | None, Query(alias="Qualifier")] = None
) -> Response:
    ref = parse_function_name(function_name, qualifier)
    if ref.qualifier not in (None, LATEST):
        raise invalid("Hearth deletes whole functions only: leave out the qualifier")
    fn = await load(request, ref)
    await function_service(request).delete(fn.name)
    return Response(status_code=204)


@router.post(PREFIX + "/{function_name}/invocations")
async def invoke_function(
    state: State,
    function_name: str,
    request: Request,
    qualifier: Annotated[str | None, Query(alias="Qualifier")] = None,
) -> Response:
    ref = parse_function_name(function_name, qualifier)
    spec = state.registry.get(key_of(request, ref.name))
    if spec is None:
        raise not_found(ref.name, arn(region(request), account(request), ref.name, ref.qualifier))
    if ref.qualifier not in (None, LATEST, str(spec.version)):
        raise LambdaError(404, "ResourceNotFoundException", f"Function not found: {ref.name}:{ref.qualifier}")
    return await lambda_invoke.invoke(state, request, spec.name)


# ----- everything else boto3 can call: after the routes above, so that only what they do not serve lands here
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]


async def unsupported_operation(request: Request) -> Response:
    raise unsupported(request.method, request.url.path)


for api_version in API_VERSIONS:
    router.add_api_route(f"/{api_version}/{{rest:path}}", unsupported_operation, methods=ALL_METHODS)
