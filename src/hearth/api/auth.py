"""The admin API key: from HEARTH_API_KEY, or generated on first start and kept in the data dir (0600)."""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from fastapi import Request

from hearth.api.errors import ApiError

KEY_FILE = "api_key"


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


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    return token.strip()


def check_api_key(request: Request) -> None:
    expected: str = request.app.state.hearth.api_key
    token = bearer_token(request)
    if token is None:
        raise ApiError(
            401,
            "Unauthorized",
            "missing API key: send `Authorization: Bearer <key>`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise ApiError(401, "Unauthorized", "invalid API key", headers={"WWW-Authenticate": "Bearer"})


async def require_api_key(request: Request) -> None:
    """FastAPI dependency for everything under /api."""
    check_api_key(request)
