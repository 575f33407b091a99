"""Who may call the Lambda API: an AWS Signature V4, or a Bearer key as on /api.

The access key id names the credential that signed. A user key's id (`k...`, as listed by
`/api/users/{user}/keys`) signs with that key's AWS secret, shown when the key is made (see
`hearth.api.auth.lambda_secret`), and acts as that user: their namespace and their key's scopes.
Any other id (`hearth`, say) signs with the admin key itself. Only signatures travel, never keys.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from fastapi import Request

from hearth.api.auth import ADMIN_PRINCIPAL, USER_KEY_ID, Principal, bearer_token
from hearth.api.bodies import read_capped_body
from hearth.api.lambda_api.errors import LambdaError
from hearth.api.lambda_api.sigv4 import SignatureError, parse_authorization, verify
from hearth.api.rate_limits import check_rate

DEFAULT_REGION = "us-east-1"
INVALID_TOKEN = "The security token included in the request is invalid."


def credentials_for(request: Request, access_key_id: str) -> tuple[str, Principal] | None:
    """(the secret that signs for `access_key_id`, who it is), or None for an unknown or revoked key."""
    state = request.app.state.hearth
    if USER_KEY_ID.fullmatch(access_key_id):
        principal = state.keys.by_id(access_key_id)
        return None if principal is None else (state.keys.lambda_secret(access_key_id), principal)
    return str(state.api_key), ADMIN_PRINCIPAL


def scope_needed(request: Request) -> str:
    if request.method == "POST" and request.url.path.endswith("/invocations"):
        return "invoke"
    return "read" if request.method in ("GET", "HEAD") else "deploy"


async def require_aws_auth(request: Request) -> None:
    """FastAPI dependency of every Lambda route; sets `request.state.aws_region` and `.principal`."""
    request.state.aws_region = DEFAULT_REGION
    header = request.headers.get("authorization", "")
    if not header:
        raise LambdaError(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    limit = body_limit(request)
    body = await read_capped_body(request, limit, too_large(limit))
    keys = request.app.state.hearth.keys
    if header.lower().startswith("bearer "):
        await keys.prefetch(bearer_token(request) or "")  # a key row is loaded off the event loop
        principal = keys.resolve(bearer_token(request) or "")
        if principal is None:
            raise LambdaError(403, "UnrecognizedClientException", INVALID_TOKEN)
    else:
        with contextlib.suppress(SignatureError):  # a malformed header is refused by verified_signer
            if USER_KEY_ID.fullmatch(key_id := parse_authorization(header).access_key_id):
                await keys.prefetch_id(key_id)
        principal = verified_signer(request, header, body)
    check_rate(request, principal)
    needed = scope_needed(request)
    if not principal.allows(needed):
        raise LambdaError(
            403,
            "AccessDeniedException",
            f"this key lacks the {needed!r} scope (it has: {', '.join(sorted(principal.scopes))})",
        )
    request.state.principal = principal


def verified_signer(request: Request, header: str, body: bytes) -> Principal:
    try:
        auth = parse_authorization(header)
        credentials = credentials_for(request, auth.access_key_id)
        if credentials is None:
            raise SignatureError("UnrecognizedClientException", INVALID_TOKEN)
        secret, principal = credentials
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
    return principal


def body_limit(request: Request) -> int:
    """The largest body any Lambda call can need: a base64 zip in JSON, or an event."""
    settings = request.app.state.hearth.settings
    return max(settings.max_request_bytes, settings.max_zip_bytes * 4 // 3 + 64 * 1024)


def too_large(limit: int) -> Callable[[], LambdaError]:
    return lambda: LambdaError(413, "RequestTooLargeException", f"Request must be smaller than {limit} bytes")
