"""Users, their quotas and their API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from hearth.api.functions.schemas import NAME_PATTERN

Scope = Literal["admin", "deploy", "invoke", "read", "metrics"]


class Quotas(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_functions: int | None = Field(default=None, ge=0, le=100_000, description="null: no limit")
    max_sandboxes: int | None = Field(default=None, ge=0, le=100_000, description="sum of max_instances")
    max_memory_mb: int | None = Field(default=None, ge=0, le=10_000_000, description="sum of memory_mb x max_instances")
    max_requests_per_s: float | None = Field(
        default=None, gt=0, le=1_000_000, description="requests per second through the user's keys, per node"
    )


class Capabilities(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allow_network: bool = Field(
        default=False, description="may deploy functions with `network: true` (the admin key always may)"
    )


class UserChange(Quotas, Capabilities):
    """PATCH /api/users/{user}: the quotas and capabilities given; the others stay."""


class UserCreate(UserChange):
    name: str = Field(pattern=NAME_PATTERN, min_length=1, max_length=63)


class UserOut(Quotas, Capabilities):
    model_config = ConfigDict(from_attributes=True)

    name: str
    created_at: datetime
    functions: int = 0


class UserList(BaseModel):
    users: list[UserOut]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="", max_length=63, description="what the key is for")
    scopes: list[Scope] = Field(default=["deploy", "invoke"], min_length=1)


class KeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    user: str
    name: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class KeyCreated(KeyOut):
    key: str = Field(description="the key itself: shown this once, stored only as a hash")
    aws_access_key_id: str = Field(description="for AWS clients of the Lambda API (boto3, the AWS CLI): the key id")
    aws_secret_access_key: str = Field(
        description="the key's AWS secret for the Lambda API's Signature V4; derived, not stored, shown this once"
    )


class KeyList(BaseModel):
    keys: list[KeyOut]
