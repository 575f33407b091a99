"""Invocation over HTTP: the API's invoke endpoint and the public HTTP trigger under /fn."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response

from hearth.api.auth import bearer_token, check_api_key, require_api_key
from hearth.api.bodies import read_capped_body
from hearth.api.dependencies import State
from hearth.api.errors import ApiError, not_found
from hearth.api.invoke.events import http_event, request_parts
from hearth.api.invoke.proxy import trigger_response
from hearth.api.invoke.responses import dumps, result_response
from hearth.api.jobs.submit import submit_job
from hearth.api.state import HearthState
from hearth.engine.engine import InvocationResult, new_invocation_id
from hearth.engine.records import CallSite
from hearth.scheduler.submit import accepted_body, without_credentials

router = APIRouter(tags=["invoke"])

ANY_JSON_BODY: dict[str, Any] = {
    "requestBody": {
        "description": "the event: any JSON value (an empty body is {})",
        "content": {"application/json": {"schema": {}}},
    }
}
INVOCATION_TYPE_HEADER = "x-hearth-invocation-type"
TRIGGER_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


async def read_body(request: Request, limit: int) -> bytes:
    return await read_capped_body(
        request, limit, lambda: ApiError(413, "PayloadTooLarge", f"request body over the limit of {limit} bytes")
    )


def parse_event(body: bytes) -> Any:
    if not body.strip():
        return {}
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(422, "InvalidJSON", f"the request body is not valid JSON: {exc}") from None


async def invoke(
    state: HearthState,
    name: str,
    event: Any,
    call: CallSite,
    answer: Callable[[InvocationResult], Response],
    invocation_id: str | None = None,
) -> Response:
    try:
        return await state.engine.invoke(
            lambda: state.registry.get(name), event, call=call, answer=answer, invocation_id=invocation_id
        )
    except LookupError:
        raise not_found(name) from None


@router.post(
    "/api/functions/{name}/invoke",
    dependencies=[Depends(require_api_key)],
    openapi_extra=ANY_JSON_BODY,
    responses={
        200: {"description": "the handler's return value as JSON"},
        202: {"description": "mode=async: queued; `{invocation_id, status_url, status}`"},
    },
)
async def invoke_function(
    name: str,
    request: Request,
    state: State,
    mode: Literal["sync", "async"] = Query("sync", description="async: answer 202 once the job is stored"),
    idempotency_key: str | None = Query(None, description="async: a repeated key returns the first job"),
    callback_url: str | None = Query(None, description="async: POST the outcome here when final"),
) -> Response:
    if state.registry.get(name) is None:
        raise not_found(name)
    body = await read_body(request, state.settings.max_request_bytes)
    if mode == "async" or request.headers.get(INVOCATION_TYPE_HEADER, "").lower() == "async":
        return await enqueue(state, request, name, parse_event(body), "api", idempotency_key, callback_url)
    return await invoke(state, name, parse_event(body), CallSite("sync", len(body)), result_response)


async def enqueue(
    state: HearthState,
    request: Request,
    name: str,
    event: Any,
    source: str,
    idempotency_key: str | None = None,
    callback_url: str | None = None,
) -> Response:
    key = idempotency_key or request.headers.get("x-hearth-idempotency-key")
    url = callback_url or request.headers.get("x-hearth-callback-url")
    job_id, created = await submit_job(state, name, event, source=source, idempotency_key=key, callback_url=url)
    return Response(
        dumps(accepted_body(job_id, created)),
        status_code=202,
        media_type="application/json",
        headers={"X-Hearth-Invocation-Id": job_id, "Location": f"/api/invocations/{job_id}"},
    )


async def serve_trigger(state: HearthState, request: Request) -> Response:
    """The HTTP trigger: shared by the FastAPI route (and its docs) and the ASGI fast path."""
    route = request.scope["path"][len("/fn") :] or "/"
    spec = state.registry.by_route(route.rstrip("/") or "/")
    if spec is None:
        raise ApiError(404, "NotFound", f"no function serves {route!r}")
    if spec.auth == "key":
        await state.keys.prefetch(bearer_token(request) or "")  # a key row is loaded off the event loop
        principal = check_api_key(request, scope="invoke")
        if not principal.sees(state.registry.owner_of(spec.name) or "admin"):
            raise ApiError(404, "NotFound", f"no function serves {route!r}")
    body = await read_body(request, state.settings.max_request_bytes)
    invocation_id = new_invocation_id()
    parts = request_parts(
        request,
        spec.route,
        body=body,
        request_id=invocation_id,
        api_id=spec.name,
        account_id=state.settings.lambda_account_id,
    )
    payload_format = spec.http_payload_format
    event = http_event(parts, payload_format)
    if (parts.header(INVOCATION_TYPE_HEADER) or "").lower() == "async":
        return await enqueue(state, request, spec.name, without_credentials(event), "http")
    public = spec.auth != "key"

    def answer(res: InvocationResult) -> Response:  # the payload format's rules: a malformed response is an error
        return trigger_response(res, payload_format, public=public)

    try:  # the engine's own call, not `invoke`'s: one coroutine frame fewer on every call's path
        return await state.engine.invoke(
            lambda: state.registry.get(spec.name),
            event,
            call=CallSite("http", len(body)),
            answer=answer,
            invocation_id=invocation_id,
        )
    except LookupError:
        raise not_found(spec.name) from None


TRIGGER_BODY: dict[str, Any] = {
    "requestBody": {
        "description": "any body, passed on in the event (base64 unless it is UTF-8 text)",
        "content": {"*/*": {"schema": {}}},
    }
}


@router.api_route("/fn/{path:path}", methods=TRIGGER_METHODS, openapi_extra=TRIGGER_BODY)
async def http_trigger(path: str, request: Request) -> Response:
    """Any method on /fn/<route>: invokes the function whose route is the longest prefix of the path, with
    the event of a Lambda function URL (AWS payload format 2.0), or API Gateway's proxy event (1.0) if
    the function sets `http_payload_format: "1.0"`; the result is read by that format's rules."""
    return await serve_trigger(request.app.state.hearth, request)
