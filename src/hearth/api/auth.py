"""Who is calling: the admin key (HEARTH_API_KEY, or generated on first start into the data dir, 0600)
or a user's API key (stored hashed), each with scopes, checked for every /api request.

Scopes: `admin` (everything, users and keys included), `deploy` (manage functions; implies `read`),
`invoke` (call functions), `read` (GET), `metrics` (platform-wide series: all functions together and
the host). A non-admin key sees only its user's functions: any `/api/.../{name}` of someone else's
function is a 404, as if it did not exist. Names in paths are resolved in the caller's namespace
(hearth.api.namespaces).

The dashboard has a key of its own (`<data dir>/dashboard_key`, 0600, made at the first start): the
admin's namespace with `deploy`, `invoke`, `read` and `metrics`, never `admin` (docs/security.md).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cachetools import TTLCache
from fastapi import Request
from sqlalchemy import select, update

from hearth.api.errors import ApiError, not_found
from hearth.api.namespaces import ADMIN, resolve, split_key
from hearth.api.rate_limits import check_rate
from hearth.store.models import ApiKey, User
from hearth.store.private import write_private

KEY_FILE = "api_key"
DASHBOARD_KEY_FILE = "dashboard_key"
SCOPES = ("admin", "deploy", "invoke", "read", "metrics")
USER_KEY_ID = re.compile(r"k[0-9a-f]{12}")
PLATFORM_SERIES = "/api/metrics/series"  # all functions together and the host: the `metrics` scope
KEY_CACHE_S = 10.0  # a key revoked on another node stops working within this long
# Key ids looked up within KEY_CACHE_S, made-up ones included: bounded, so a flood of well-formed
# tokens with random ids costs database lookups (off the event loop) but never memory.
KEY_CACHE_SIZE = 4096


@dataclass(frozen=True)
class Principal:
    user: str
    scopes: frozenset[str]
    key_id: str | None = None  # None for the admin key
    max_requests_per_s: float | None = None  # the user's request rate limit (hearth.api.rate_limits)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    def allows(self, scope: str) -> bool:
        return self.is_admin or scope in self.scopes or (scope == "read" and "deploy" in self.scopes)

    def sees(self, owner: str) -> bool:
        return self.is_admin or owner == self.user


ADMIN_PRINCIPAL = Principal(ADMIN, frozenset({"admin"}))
# What the dashboard's key may do: manage, call and watch the admin's namespace; no users, keys or grants.
DASHBOARD_PRINCIPAL = Principal(ADMIN, frozenset({"deploy", "invoke", "read", "metrics"}), key_id="dashboard")


def load_or_create_api_key(configured: str | None, data_dir: Path) -> tuple[str, bool]:
    """(key, created_now)."""
    if configured:
        return configured, False
    path = data_dir / KEY_FILE
    if path.exists():
        return path.read_text().strip(), False
    key = "hk_" + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key, True


def load_or_create_dashboard_key(data_dir: Path) -> str:
    """The dashboard's key: read from `<data dir>/dashboard_key`, or made there (0600) at the first start.
    Delete the file and restart Hearth to replace it."""
    path = data_dir / DASHBOARD_KEY_FILE
    with contextlib.suppress(FileNotFoundError):
        key = path.read_text().strip()
        if key:
            return key
    key = "hd_" + secrets.token_urlsafe(32)
    write_private(path, key + "\n")
    return key


def new_user_key() -> tuple[str, str, str]:
    """(key id, the key shown once, its sha256). Keys look like `hk_<id>_<secret>`."""
    key_id = "k" + secrets.token_hex(6)
    key = f"hk_{key_id}_{secrets.token_urlsafe(32)}"
    return key_id, key, digest(key)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    """Resolves bearer tokens and Lambda access key ids to principals; key rows are cached briefly."""

    def __init__(self, admin_key: str, sessions, dashboard_key: str | None = None) -> None:  # type: ignore[no-untyped-def]
        self._admin = admin_key.encode()
        self._dashboard = dashboard_key.encode() if dashboard_key else None
        self._sessions = sessions
        # key id -> the row's sha256 and principal, or None if no live key has that id
        self._cache: TTLCache[str, tuple[str, Principal] | None] = TTLCache(KEY_CACHE_SIZE, KEY_CACHE_S)
        self._cache_lock = threading.Lock()  # loads run in worker threads (see `prefetch`)

    def forget(self, key_id: str | None = None) -> None:
        with self._cache_lock:
            self._cache.clear() if key_id is None else self._cache.pop(key_id, None)

    async def prefetch(self, token: str) -> None:
        """Load the row of a user key's id into the cache in a worker thread, so that `resolve` on the
        event loop finds it there instead of querying (and updating) the database in the loop."""
        parts = token.split("_", 2)
        if len(parts) == 3 and parts[0] == "hk":
            await self.prefetch_id(parts[1])

    async def prefetch_id(self, key_id: str) -> None:
        """`prefetch` for a key named by its id alone (a Lambda access key id), before `by_id`."""
        with self._cache_lock:
            cached = key_id in self._cache
        if not cached:
            await asyncio.to_thread(self._live, key_id)

    def resolve(self, token: str) -> Principal | None:
        if hmac.compare_digest(token.encode(), self._admin):
            return ADMIN_PRINCIPAL
        if self._dashboard is not None and hmac.compare_digest(token.encode(), self._dashboard):
            return DASHBOARD_PRINCIPAL
        parts = token.split("_", 2)  # the secret itself may contain "_"
        if len(parts) != 3 or parts[0] != "hk":
            return None
        live = self._live(parts[1])
        # The cache holds the row, never a verdict on a token: every token is compared with its hash.
        if live is None or not hmac.compare_digest(live[0], digest(token)):
            return None
        return live[1]

    def by_id(self, key_id: str) -> Principal | None:
        """The principal of a live user key named by its id alone (a Lambda access key id)."""
        live = self._live(key_id)
        return None if live is None else live[1]

    def lambda_secret(self, key_id: str) -> str:
        """The AWS secret access key that goes with user key `key_id` (see `lambda_secret`)."""
        return lambda_secret(self._admin, key_id)

    def _live(self, key_id: str) -> tuple[str, Principal] | None:
        with self._cache_lock:
            if key_id in self._cache:
                return self._cache[key_id]
        live = self._load(key_id)
        with self._cache_lock:
            self._cache[key_id] = live
        return live

    def _load(self, key_id: str) -> tuple[str, Principal] | None:
        with self._sessions.begin() as session:
            found = session.execute(
                select(ApiKey, User.max_requests_per_s).join(User).where(ApiKey.id == key_id)
            ).first()
            if found is None or found[0].revoked_at is not None:
                return None
            row, rate = found
            session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=datetime.now(UTC)))
            return row.sha256, Principal(row.user_name, frozenset(row.scopes), key_id, rate)


def lambda_secret(admin_key: bytes, key_id: str) -> str:
    """A user key's AWS secret access key, derived rather than stored.

    SigV4 is an HMAC, so the server must hold the secret it checks against, but user keys are
    stored only as hashes. The secret is therefore derived from the admin key (which can do
    everything anyway) and the key id: nothing new is stored, revoking the key revokes it, and
    changing the admin key changes every user's AWS secret.
    """
    mac = hmac.new(admin_key, b"hearth-lambda-secret/" + key_id.encode(), hashlib.sha256).digest()
    return "hs_" + base64.urlsafe_b64encode(mac).decode().rstrip("=")


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    return token.strip()


def authenticate(request: Request) -> Principal:
    token = bearer_token(request)
    if token is None:
        raise ApiError(
            401,
            "Unauthorized",
            "missing API key: send `Authorization: Bearer <key>`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    principal = request.app.state.hearth.keys.resolve(token)
    if principal is None:
        raise ApiError(401, "Unauthorized", "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
    check_rate(request, principal)
    request.state.principal = principal
    return principal


def scope_needed(request: Request) -> str:
    path = request.url.path
    if path.startswith(("/api/users", "/api/keys")):
        return "admin"
    if path == PLATFORM_SERIES:
        return "metrics"
    if request.method == "POST" and "/invoke" in path:
        return "invoke"
    if request.method in ("GET", "HEAD"):
        return "read"
    return "deploy"


def check_api_key(request: Request, scope: str | None = None) -> Principal:
    """Authenticates and authorises the request, and hides other users' functions (404)."""
    principal = authenticate(request)
    needed = scope or scope_needed(request)
    if not principal.allows(needed):
        raise ApiError(
            403, "Forbidden", f"this key lacks the {needed!r} scope (it has: {', '.join(sorted(principal.scopes))})"
        )
    name = request.path_params.get("name")
    if name is not None:
        key = resolve(principal.user, name)
        if not principal.is_admin and split_key(key)[0] != principal.user:
            raise not_found(name)
        # Endpoints read their `{name}` after this dependency ran: they all see the function's key.
        request.path_params["name"] = key
    return principal


async def require_api_key(request: Request) -> None:
    """FastAPI dependency for everything under /api."""
    token = bearer_token(request)
    if token is not None:
        await request.app.state.hearth.keys.prefetch(token)
    check_api_key(request)


def principal_of(request: Request) -> Principal:
    """The caller, as `require_api_key` authenticated it."""
    principal = getattr(request.state, "principal", None)
    if principal is None:
        raise RuntimeError("principal_of() on a route without require_api_key")
    return principal  # type: ignore[no-any-return]
