"""HTTP requests to the trigger as the events AWS Lambda receives from an HTTP front.

Payload format 2.0 is what a Lambda function URL (and an API Gateway HTTP API with format 2.0)
delivers; 1.0 is the API Gateway proxy event (REST API, or HTTP API with format 1.0). The field
lists and their rules are AWS's: docs/lambda.md, "HTTP trigger events", links to them.

The function sees the path below its route: a function whose route is `/shop`, called at
`/fn/shop/items/5`, gets `/items/5`, as an app behind its own function URL would.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any, Literal
from urllib.parse import parse_qsl, quote

from starlette.requests import Request

PayloadFormat = Literal["2.0", "1.0"]
PAYLOAD_FORMATS: tuple[PayloadFormat, ...] = ("2.0", "1.0")
DEFAULT_PAYLOAD_FORMAT: PayloadFormat = "2.0"
STAGE = "$default"
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# Bodies of these types (and of none declared) arrive as text when they are UTF-8; others base64.
TEXT_TYPES = (
    "text/",
    "application/json",
    "application/xml",
    "application/javascript",
    "application/x-www-form-urlencoded",
)
TEXT_SUFFIXES = ("+json", "+xml")


@dataclass(eq=False)
class HttpRequest:
    """What an event is made of: one request to the trigger, seen from below the function's route.

    Not frozen: a frozen dataclass's __init__ costs a setattr call per field, on the warm path."""

    method: str
    raw_path: str  # percent-encoded as sent, below the route ("/" at the route itself)
    path: str  # the same, decoded
    raw_query: str
    headers: list[tuple[str, str]]  # lower-case names, in order, repeats kept
    joined_headers: dict[str, str]  # one value per name, a repeated header's values joined with `,` (2.0's rule)
    body: bytes
    source_ip: str
    protocol: str
    request_id: str
    api_id: str
    account_id: str
    time_s: float

    def header(self, name: str) -> str | None:
        return self.joined_headers.get(name)

    @cached_property
    def query(self) -> dict[str, list[str]]:
        return grouped(parse_qsl(self.raw_query, keep_blank_values=True)) if self.raw_query else {}


def request_parts(
    request: Request, route: str, *, body: bytes = b"", request_id: str, api_id: str, account_id: str
) -> HttpRequest:
    """The parts of `request` (to /fn<route>[/more]) that events are made of; adds the X-Forwarded-*
    headers an AWS front adds (so that frameworks build the URLs the client used)."""
    scope = request.scope
    prefix = "/fn" + ("" if route == "/" else route)
    path = scope["path"][len(prefix) :] or "/"
    raw = scope.get("raw_path") or b""
    raw_text = raw.decode("latin-1")
    rest = raw_text[len(prefix) :] if raw_text.startswith(prefix) else None
    raw_path = (rest or "/") if rest is not None and rest[:1] in ("", "/") else quote(path)
    client = scope.get("client") or ("", 0)
    server = scope.get("server") or ("", 0)
    client_ip = str(client[0])
    headers, joined = with_forwarding(scope["headers"], client_ip, scope.get("scheme", "http"), server[1])
    return HttpRequest(
        scope["method"],
        raw_path,
        path,
        scope.get("query_string", b"").decode("latin-1"),
        headers,
        joined,
        body,
        client_ip,
        f"HTTP/{scope.get('http_version', '1.1')}",
        request_id,
        api_id,
        account_id,
        time.time(),
    )


def with_forwarding(
    raw_headers: Iterable[tuple[bytes, bytes]], client_ip: str, scheme: str, port: int | None
) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """The request's headers (decoded, names lower-cased) as an AWS front passes them on: X-Forwarded-For
    gets the client's address appended (moved last), X-Forwarded-Proto and -Port are added if missing.
    Both as a list (repeats kept) and joined (one value per name), in one pass."""
    out = []
    joined: dict[str, str] = {}
    forwarded = []
    for raw_name, raw_value in raw_headers:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        if name == "x-forwarded-for":
            forwarded.append(value)
            continue
        out.append((name, value))
        joined[name] = f"{joined[name]},{value}" if name in joined else value
    added = [("x-forwarded-for", ", ".join([*forwarded, client_ip]) if forwarded else client_ip)]
    if "x-forwarded-proto" not in joined:
        added.append(("x-forwarded-proto", scheme))
    if "x-forwarded-port" not in joined and port:
        added.append(("x-forwarded-port", str(port)))
    out.extend(added)
    joined.update(added)
    return out, joined


def is_text(content_type: str | None, body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    if not content_type:
        return True
    kind = content_type.split(";")[0].strip().lower()
    return kind.startswith(TEXT_TYPES) or kind.endswith(TEXT_SUFFIXES)


def encoded_body(req: HttpRequest) -> tuple[str, bool]:
    if is_text(req.header("content-type"), req.body):
        return req.body.decode("utf-8"), False
    return base64.b64encode(req.body).decode("ascii"), True


def clf_time(epoch_s: float) -> str:
    """`12/Mar/2020:19:03:58 +0000`, as requestContext.time / requestTime are written."""
    return clf_second(int(epoch_s))


@lru_cache(maxsize=4)
def clf_second(epoch_s: int) -> str:
    t = time.gmtime(epoch_s)
    return f"{t.tm_mday:02d}/{MONTHS[t.tm_mon - 1]}/{t.tm_year}:{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"


def domain(req: HttpRequest) -> tuple[str, str]:
    """(domainName, domainPrefix): the host the client called, and its first label."""
    host = req.header("host") or "localhost"
    return host, host.split(":")[0].split(".")[0]


def grouped(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in pairs:
        out.setdefault(key, []).append(value)
    return out


def event_v2(req: HttpRequest) -> dict[str, Any]:
    """Payload format 2.0: repeated headers and query keys comma-joined, cookies in their own list."""
    joined = req.joined_headers
    headers = joined
    cookies: list[str] = []
    if "cookie" in joined:
        cookies = [c.strip() for key, value in req.headers if key == "cookie" for c in value.split(";") if c.strip()]
        headers = {key: value for key, value in joined.items() if key != "cookie"}
    domain_name, domain_prefix = domain(req)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": req.raw_path,
        "rawQueryString": req.raw_query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = headers
    if req.raw_query and (query := req.query):
        event["queryStringParameters"] = {key: ",".join(values) for key, values in query.items()}
    event["requestContext"] = {
        "accountId": req.account_id,
        "apiId": req.api_id,
        "domainName": domain_name,
        "domainPrefix": domain_prefix,
        "http": {
            "method": req.method,
            "path": req.raw_path,
            "protocol": req.protocol,
            "sourceIp": req.source_ip,
            "userAgent": joined.get("user-agent") or "",
        },
        "requestId": req.request_id,
        "routeKey": "$default",
        "stage": STAGE,
        "time": clf_second(int(req.time_s)),
        "timeEpoch": int(req.time_s * 1000),
    }
    if req.body:
        event["body"], event["isBase64Encoded"] = encoded_body(req)
    else:
        event["isBase64Encoded"] = False
    return event


def event_v1(req: HttpRequest) -> dict[str, Any]:
    """Payload format 1.0 (the API Gateway proxy event): single- and multi-value maps side by side; the
    function is integrated as the `/{proxy+}` resource (`/` for the route itself)."""
    headers = grouped(req.headers)
    query = req.query
    proxy = req.path.lstrip("/")
    resource = "/{proxy+}" if proxy else "/"
    domain_name, domain_prefix = domain(req)
    body, encoded = encoded_body(req) if req.body else (None, False)
    return {
        "version": "1.0",
        "resource": resource,
        "path": req.path,
        "httpMethod": req.method,
        "headers": {key: values[-1] for key, values in headers.items()},
        "multiValueHeaders": headers,
        "queryStringParameters": {key: values[-1] for key, values in query.items()} if query else None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": {"proxy": proxy} if proxy else None,
        "stageVariables": None,
        "requestContext": {
            "accountId": req.account_id,
            "apiId": req.api_id,
            "domainName": domain_name,
            "domainPrefix": domain_prefix,
            "extendedRequestId": req.request_id,
            "httpMethod": req.method,
            "identity": {
                "accessKey": None,
                "accountId": None,
                "caller": None,
                "cognitoAuthenticationProvider": None,
                "cognitoAuthenticationType": None,
                "cognitoIdentityId": None,
                "cognitoIdentityPoolId": None,
                "principalOrgId": None,
                "sourceIp": req.source_ip,
                "user": None,
                "userAgent": req.header("user-agent") or "",
                "userArn": None,
            },
            "path": req.path,
            "protocol": req.protocol,
            "requestId": req.request_id,
            "requestTime": clf_time(req.time_s),
            "requestTimeEpoch": int(req.time_s * 1000),
            "resourceId": None,
            "resourcePath": resource,
            "stage": STAGE,
        },
        "body": body,
        "isBase64Encoded": encoded,
    }


def http_event(req: HttpRequest, payload_format: str) -> dict[str, Any]:
    return event_v1(req) if payload_format == "1.0" else event_v2(req)
