"""Who may call the Lambda API: an AWS Signature V4 whose secret is a Hearth API key, or a Bearer key.

The access key id names which Hearth key signed: `hearth` (or any id) maps to the admin key, the only
key there is today. The signature is checked, so the key itself never travels with the request.
"""

from __future__ import annotations

import hmac

from fastapi import Request

from hearth.api.auth import bearer_token
from hearth.api.lambda_api.errors import LambdaError
from hearth.api.lambda_api.sigv4 import SignatureError, parse_authorization, verify

DEFAULT_REGION = "us-east-1"
INVALID_TOKEN = "The security token included in the request is invalid."


def secret_for(request: Request, access_key_id: str) -> str | None:
    """The Hearth API key that `access_key_id` stands for (every id maps to the admin key)."""
    del access_key_id
    return str(request.app.state.hearth.api_key)


async def require_aws_auth(request: Request) -> None:
    """FastAPI dependency of every Lambda route; sets `request.state.aws_region`."""
    request.state.aws_region = DEFAULT_REGION
    header = request.headers.get("authorization", "")
    if not header:
        raise LambdaError(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    body = await read_capped_body(request, body_limit(request))
    if header.lower().startswith("bearer "):
        token = bearer_token(request) or ""
        if not hmac.compare_digest(token.encode(), str(request.app.state.hearth.api_key).encode()):
            raise LambdaError(403, "UnrecognizedClientException", INVALID_TOKEN)
        return
    try:
        auth = parse_authorization(header)
        secret = secret_for(request, auth.access_key_id)
        if secret is None:
            raise SignatureError("UnrecognizedClientException", INVALID_TOKEN)
        verify(
            method=request.method,
            raw_path=(request.scope.get("raw_path") or request.scope["path"].encode()).decode("latin-1"),
            query=request.scope.get("query_string", b"").decode("latin-1"),
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]],
            body=body,
            auth=auth,
            secret=secret,
        )
    except SignatureError as exc:
        raise LambdaError(403, exc.code, exc.message) from None
    request.state.aws_region = auth.region


def body_limit(request: Request) -> int:
    """The largest body any Lambda call can need: a base64 zip in JSON, or an event."""
    settings = request.app.state.hearth.settings
    return max(settings.max_request_bytes, settings.max_zip_bytes * 4 // 3 + 64 * 1024)


async def read_capped_body(request: Request, limit: int) -> bytes:
    """The body, read at most once and kept for the route (Starlette caches it in `_body`)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise LambdaError(413, "RequestTooLargeException", f"Request must be smaller than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise LambdaError(413, "RequestTooLargeException", f"Request must be smaller than {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # what request.body() returns from now on
    return body
