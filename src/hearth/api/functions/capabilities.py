"""Capabilities: what a user may ask of a sandbox only if the admin granted it.

`allow_network`: a version with `network: true` (a network interface with egress) is written only by the
admin key or by a key whose user has the capability. The check is on the version being written, whatever
asked for it (POST, PUT, PATCH, a code upload, the Lambda API, the dashboard, the CLI): a user without the
capability cannot write a new version of a function the admin gave network to, unless it turns network
off. Revoking the capability stops new network versions; what is deployed keeps running until changed.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from hearth.api.auth import Principal
from hearth.api.errors import ApiError
from hearth.api.namespaces import ADMIN
from hearth.store.models import User

NETWORK = "allow_network"


def check_capabilities(session: Session, caller: Principal, owner: str, values: dict[str, Any]) -> None:
    """Raise 403 if `caller` may not write a version of `owner`'s function with these settings."""
    if not values.get("network") or caller.is_admin:
        return
    user = session.get(User, owner) if owner != ADMIN else None
    if user is not None and user.allow_network:
        return
    who = f"user {owner!r}" if owner != ADMIN else "this key (only the admin key may, in the admin's namespace)"
    grant = f' (the admin grants it: PATCH /api/users/{owner} {{"allow_network": true}})' if owner != ADMIN else ""
    raise ApiError(
        403,
        "Forbidden",
        f"network: true needs the {NETWORK!r} capability, which {who} lacks{grant}",
        capability=NETWORK,
    )
