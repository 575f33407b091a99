"""Users and keys in the store (runs in worker threads; the router awaits it with asyncio.to_thread).

A user's name is their namespace, and records (invocations and their logs, async jobs, builds, metrics
rollups and samples, schedule ticks) name functions by key (`<user>.<name>`). Deleting a user deletes
those records, so that someone later given the same name finds none of them; creating a user deletes
any that were written after (a record still in a node's write-behind buffer, a job finishing late).
A user who still owns functions cannot be deleted (409): their functions go first.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from hearth.api.auth import ADMIN, new_user_key
from hearth.api.errors import ApiError
from hearth.api.namespaces import SEPARATOR
from hearth.api.users.schemas import KeyCreate, KeyCreated, KeyOut, UserCreate, UserOut
from hearth.store.models import (
    ApiKey,
    Build,
    Function,
    Invocation,
    InvocationRollup,
    Job,
    ResourceSample,
    ScheduleTick,
    User,
)

# Everything that names a function by key and outlives the function.
RECORDS = (Invocation, InvocationRollup, ResourceSample, Build, Job, ScheduleTick)


def user_missing(name: str) -> ApiError:
    return ApiError(404, "NotFound", f"user {name!r} does not exist")


class UserStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def _out(self, session: Session, user: User) -> UserOut:
        owned = session.scalar(select(func.count()).select_from(Function).where(Function.owner == user.name))
        return UserOut.model_validate(user, from_attributes=True).model_copy(update={"functions": owned or 0})

    def create(self, body: UserCreate) -> UserOut:
        if body.name == ADMIN:
            raise ApiError(409, "Conflict", "'admin' is the built-in administrator (the HEARTH_API_KEY key)")
        with self.sessions() as session:
            claimed = session.scalar(
                select(Function.route).where(
                    Function.owner == ADMIN,
                    or_(Function.route == f"/{body.name}", Function.route.like(f"/{body.name}/%")),
                )
            )
            if claimed is not None:
                raise ApiError(
                    409, "Conflict", f"route {claimed!r} of an admin function lies in the namespace /{body.name}/"
                )
            purge_namespace(session, body.name)  # a previous user's of this name, written after their deletion
            user = User(**body.model_dump(), created_at=datetime.now(UTC))
            session.add(user)
            try:
                session.commit()
            except IntegrityError:
                raise ApiError(409, "Conflict", f"a user named {body.name!r} already exists") from None
            return self._out(session, user)

    def list(self) -> list[UserOut]:
        with self.sessions() as session:
            return [self._out(session, u) for u in session.scalars(select(User).order_by(User.name))]

    def get(self, name: str) -> UserOut:
        with self.sessions() as session:
            user = session.get(User, name)
            if user is None:
                raise user_missing(name)
            return self._out(session, user)

    def update(self, name: str, quotas: dict[str, Any]) -> UserOut:
        with self.sessions() as session:
            user = session.get(User, name)
            if user is None:
                raise user_missing(name)
            for field, value in quotas.items():
                setattr(user, field, value)
            session.commit()
            return self._out(session, user)

    def delete(self, name: str) -> list[str]:
        """Deletes the user and their keys; refuses while they own functions. Returns the key ids."""
        with self.sessions() as session:
            user = session.get(User, name)
            if user is None:
                raise user_missing(name)
            owned = session.scalar(select(func.count()).select_from(Function).where(Function.owner == name))
            if owned:
                raise ApiError(409, "Conflict", f"user {name!r} still owns {owned} function(s): delete them first")
            keys = list(session.scalars(select(ApiKey.id).where(ApiKey.user_name == name)))
            for key in session.scalars(select(ApiKey).where(ApiKey.user_name == name)):
                session.delete(key)
            session.delete(user)
            purge_namespace(session, name)
            session.commit()
            return keys

    def create_key(self, name: str, body: KeyCreate, aws_secret_for: Callable[[str], str]) -> KeyCreated:
        """`aws_secret_for`: the key's AWS secret for the Lambda API, from its id (KeyRing.lambda_secret)."""
        with self.sessions() as session:
            if session.get(User, name) is None:
                raise user_missing(name)
            key_id, key, sha256 = new_user_key()
            row = ApiKey(
                id=key_id,
                user_name=name,
                name=body.name,
                sha256=sha256,
                scopes=sorted(set(body.scopes)),
                created_at=datetime.now(UTC),
            )
            session.add(row)
            session.commit()
            return KeyCreated(
                **key_out(row).model_dump(),
                key=key,
                aws_access_key_id=key_id,
                aws_secret_access_key=aws_secret_for(key_id),
            )

    def keys(self, name: str) -> list[KeyOut]:
        with self.sessions() as session:
            if session.get(User, name) is None:
                raise user_missing(name)
            rows = session.scalars(select(ApiKey).where(ApiKey.user_name == name).order_by(ApiKey.created_at))
            return [key_out(row) for row in rows]

    def revoke(self, key_id: str) -> None:
        with self.sessions() as session:
            row = session.get(ApiKey, key_id)
            if row is None:
                raise ApiError(404, "NotFound", f"key {key_id!r} does not exist")
            if row.revoked_at is None:
                row.revoked_at = datetime.now(UTC)
                session.commit()


def purge_namespace(session: Session, user: str) -> None:
    """Deletes every record of functions in `user`'s namespace (not committed)."""
    prefix = f"{user}{SEPARATOR}"
    for model in RECORDS:
        session.execute(delete(model).where(model.function_name.startswith(prefix, autoescape=True)))


def key_out(row: ApiKey) -> KeyOut:
    return KeyOut(
        id=row.id,
        user=row.user_name,
        name=row.name,
        scopes=list(row.scopes),
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )
