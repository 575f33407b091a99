"""AWS Signature Version 4, verified on the server side.

AWS clients sign every request with their secret access key; Hearth recomputes the signature with
the secret that belongs to the access key id (see `auth.py`) and compares. The
canonical request is built the way botocore builds it: the path percent-encoded once more, the
query re-encoded and sorted, the signed headers with their whitespace folded, the body's sha256.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
MAX_SKEW_S = 15 * 60


class SignatureError(Exception):
    """The request's signature does not hold; `code` is the AWS error code to answer with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Authorization:
    access_key_id: str
    date: str  # YYYYMMDD
    region: str
    service: str
    signed_headers: list[str]
    signature: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


def parse_authorization(header: str) -> Authorization:
    algorithm, _, rest = header.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise SignatureError("IncompleteSignatureException", f"unsupported authorization scheme {algorithm!r}")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, _, value = part.strip().partition("=")
        fields[key] = value
    try:
        access_key_id, date, region, service, terminator = fields["Credential"].split("/")
        signed_headers = [h for h in fields["SignedHeaders"].split(";") if h]
        signature = fields["Signature"]
    except (KeyError, ValueError):
        raise SignatureError(
            "IncompleteSignatureException",
            "Authorization needs Credential=id/date/region/service/aws4_request, SignedHeaders and Signature",
        ) from None
    if terminator != "aws4_request" or not signed_headers or "host" not in signed_headers:
        raise SignatureError("IncompleteSignatureException", "the credential scope or signed headers are malformed")
    return Authorization(access_key_id, date, region, service, signed_headers, signature)


def remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4, as botocore's normalize_url_path (a trailing slash stays)."""
    if not path:
        return "/"
    output: list[str] = []
    for segment in path.split("/"):
        if segment == ".":
            continue
        if segment == "..":
            if output:
                output.pop()
        else:
            output.append(segment)
    result = "/".join(output)
    if not result.startswith("/"):
        result = "/" + result
    if path.endswith("/") and not result.endswith("/"):
        result += "/"
    return result


def canonical_queries(query: str) -> list[str]:
    """Candidate canonical query strings: re-encoded (botocore's params) and as sent (botocore's url)."""
    if not query:
        return [""]
    pairs = [pair.partition("=")[::2] for pair in query.split("&")]
    encoded = sorted((quote(unquote(k), safe="-_.~"), quote(unquote(v), safe="-_.~")) for k, v in pairs)
    raw = sorted(pairs)
    candidates = ["&".join(f"{k}={v}" for k, v in encoded), "&".join(f"{k}={v}" for k, v in raw)]
    return list(dict.fromkeys(candidates))


def signing_key(secret: str, auth: Authorization) -> bytes:
    key = hmac.new(("AWS4" + secret).encode(), auth.date.encode(), hashlib.sha256).digest()
    for part in (auth.region, auth.service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def verify(
    *,
    method: str,
    raw_path: str,
    query: str,
    headers: list[tuple[str, str]],
    body: bytes,
    auth: Authorization,
    secret: str,
    now: datetime | None = None,
) -> None:
    """Raise SignatureError unless `auth.signature` signs this request with `secret`."""
    by_name: dict[str, list[str]] = {}
    for name, value in headers:
        by_name.setdefault(name.lower(), []).append(value)
    amz_date = (by_name.get("x-amz-date") or [""])[0]
    try:
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise SignatureError("IncompleteSignatureException", "X-Amz-Date is missing or malformed") from None
    if not amz_date.startswith(auth.date):
        raise SignatureError("InvalidSignatureException", "the credential date does not match X-Amz-Date")
    skew = abs(((now or datetime.now(UTC)) - signed_at).total_seconds())
    if skew > MAX_SKEW_S:
        raise SignatureError("InvalidSignatureException", f"Signature expired: signed {skew:.0f} s away from now")
    missing = [h for h in auth.signed_headers if h not in by_name]
    if missing:
        raise SignatureError("InvalidSignatureException", f"signed headers missing from the request: {missing}")
    canonical_headers = "".join(
        f"{name}:{','.join(' '.join(v.split()) for v in by_name[name])}\n" for name in auth.signed_headers
    )
    declared = (by_name.get("x-amz-content-sha256") or [""])[0]
    actual = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
    if declared and declared != UNSIGNED_PAYLOAD and declared != actual:
        raise SignatureError("InvalidSignatureException", "X-Amz-Content-Sha256 does not match the body")
    payload_hash = declared or actual
    path = quote(remove_dot_segments(raw_path), safe="/~")
    key = signing_key(secret, auth)
    for canonical_query in canonical_queries(query):
        canonical = "\n".join(
            [method, path, canonical_query, canonical_headers, ";".join(auth.signed_headers), payload_hash]
        )
        to_sign = "\n".join([ALGORITHM, amz_date, auth.scope, hashlib.sha256(canonical.encode()).hexdigest()])
        expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        if hmac.compare_digest(expected, auth.signature):
            return
    raise SignatureError(
        "InvalidSignatureException",
        "The request signature we calculated does not match the signature you provided. "
        "Check your AWS Secret Access Key (on Hearth: the admin API key, or a user key's "
        "aws_secret_access_key) and signing method.",
    )
