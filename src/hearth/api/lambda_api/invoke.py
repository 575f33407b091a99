"""Lambda's Invoke: RequestResponse, Event and DryRun, with Lambda's headers and error payloads.

A handler error still answers 200, with `X-Amz-Function-Error: Unhandled` and the payload
`{errorMessage, errorType, stackTrace}`; a full pool answers 429 TooManyRequestsException (which
boto3 retries by itself). `LogType: Tail` returns the last 4 KB of the invocation's log, base64.
"""

from __future__ import annotations

import base64
import logging
import math
from typing import Any

import orjson
from fastapi import Request, Response

from hearth.api.invoke.responses import dumps
from hearth.api.invoke.router import parse_event
from hearth.api.jobs.submit import submit_job
from hearth.api.lambda_api.errors import LambdaError, invalid
from hearth.api.lambda_api.mapping import LATEST
from hearth.api.state import HearthState
from hearth.engine.engine import InvocationResult, new_invocation_id
from hearth.engine.records import CallSite, as_result

log = logging.getLogger(__name__)
INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")
LOG_TAIL_BYTES = 4096
# Hearth's failure types -> Lambda's errorType for failures outside the handler.
ERROR_TYPES = {"timeout": "Sandbox.Timedout", "oom": "Runtime.OutOfMemory", "crashed": "Runtime.ExitError"}


async def invoke(state: HearthState, request: Request, name: str) -> Response:
    invocation_type = request.headers.get("x-amz-invocation-type") or "RequestResponse"
    if invocation_type not in INVOCATION_TYPES:
        raise invalid(f"Invalid invocation type {invocation_type!r}: use RequestResponse, Event or DryRun")
    log_type = request.headers.get("x-amz-log-type") or "None"
    if log_type not in ("None", "Tail"):
        raise invalid(f"Invalid log type {log_type!r}: use None or Tail")
    body: bytes = getattr(request, "_body", b"")
    limit = state.settings.max_request_bytes
    if len(body) > limit:
        raise LambdaError(413, "RequestTooLargeException", f"Request must be smaller than {limit} bytes")
    event = parse_event(body)  # ApiError InvalidJSON -> InvalidRequestContentException
    invocation_id = new_invocation_id()
    headers = {"x-amzn-RequestId": invocation_id, "X-Amz-Executed-Version": LATEST}
    if invocation_type == "DryRun":
        return Response(status_code=204, headers=headers)
    if invocation_type == "Event":  # the durable async queue, with the function's retries
        if state.registry.get(name) is None:
            raise LambdaError(404, "ResourceNotFoundException", f"Function not found: {name}")
        job_id, _ = await submit_job(state, name, event, source="lambda")
        headers["x-amzn-RequestId"] = job_id
        return Response(status_code=202, headers=headers)
    try:
        res = await state.engine.invoke(
            lambda: state.registry.get(name),
            event,
            call=CallSite("sync", len(body)),
            answer=as_result,
            invocation_id=invocation_id,
            client_context=client_context(request.headers.get("x-amz-client-context")),
        )
    except LookupError:
        raise LambdaError(404, "ResourceNotFoundException", f"Function not found: {name}") from None
    headers["X-Amz-Executed-Version"] = str(res.version)
    if res.status == "throttled":
        retry = max(1, math.ceil(res.retry_after_s or 1))
        raise LambdaError(
            429,
            "TooManyRequestsException",
            "Rate Exceeded.",
            headers={"Retry-After": str(retry), **headers},
            Reason="ConcurrentInvocationLimitExceeded",
            retryAfterSeconds=str(retry),
        )
    if res.status == "ok":
        payload = res.result_json or b"null"  # the agent's encoding, as it is
    else:
        payload = dumps(error_payload(res))
        headers["X-Amz-Function-Error"] = "Unhandled"
    if log_type == "Tail":
        headers["X-Amz-Log-Result"] = log_tail(res, state)
    return Response(payload, status_code=200, headers=headers, media_type="application/json")


def client_context(header: str | None) -> Any:
    """X-Amz-Client-Context: base64 of a JSON object, at most 3,583 bytes (Lambda's limit)."""
    if not header:
        return None
    if len(header) > 3583:
        raise invalid("X-Amz-Client-Context is over 3583 bytes")
    try:
        return orjson.loads(base64.b64decode(header, validate=True))
    except (ValueError, orjson.JSONDecodeError):
        raise invalid("X-Amz-Client-Context must be base64-encoded JSON") from None


def error_payload(res: InvocationResult) -> dict[str, Any]:
    error = res.error or {}
    if res.status == "error":  # the agents name load failures as Lambda does (Runtime.ImportModuleError, ...)
        error_type = str(error.get("type") or "Error")
    else:
        error_type = ERROR_TYPES.get(res.status, "Runtime.Unknown")
    message = str(error.get("message") or "the invocation failed")
    if res.status == "timeout":
        message = f"Task timed out: {message}"
    if isinstance(error.get("trace"), list):  # Node's runtime answers {errorType, errorMessage, trace}
        return {"errorType": error_type, "errorMessage": message, "trace": [str(line) for line in error["trace"]]}
    stack = error.get("stack_trace")  # Python's runtime: {errorMessage, errorType, requestId, stackTrace}
    if not isinstance(stack, list):
        trace = str(error.get("traceback") or "")
        stack = [line for line in trace.splitlines() if line.startswith(" ")]  # the frames
    return {
        "errorMessage": message,
        "errorType": error_type,
        "requestId": res.invocation_id,
        "stackTrace": [str(line) for line in stack],
    }


def log_tail(res: InvocationResult, state: HearthState) -> str:
    spec = state.registry.get(res.function)
    memory = spec.memory_mb if spec is not None else 0
    init = f"\tInit Duration: {res.init_ms:.2f} ms" if res.init_ms is not None else ""
    text = (
        f"START RequestId: {res.invocation_id} Version: {res.version}\n"
        f"{res.stdout}{res.stderr}"
        f"END RequestId: {res.invocation_id}\n"
        f"REPORT RequestId: {res.invocation_id}\tDuration: {res.duration_ms:.2f} ms\t"
        f"Billed Duration: {math.ceil(res.duration_ms)} ms\tMemory Size: {memory} MB{init}\n"
    )
    return base64.b64encode(text.encode()[-LOG_TAIL_BYTES:]).decode("ascii")
