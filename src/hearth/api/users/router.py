"""/api/users and /api/keys: admin-only management of users, their quotas and their API keys."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Response

from hearth.api.auth import require_api_key
from hearth.api.dependencies import State
from hearth.api.users.schemas import KeyCreate, KeyCreated, KeyList, UserChange, UserCreate, UserList, UserOut
from hearth.api.users.service import UserStore

router = APIRouter(prefix="/api", tags=["users"], dependencies=[Depends(require_api_key)])


def user_store(state: State) -> UserStore:
    return UserStore(state.sessions)


Users = Annotated[UserStore, Depends(user_store)]


@router.post("/users", status_code=201, response_model=UserOut, summary="Create a user (admin)")
async def create_user(body: UserCreate, users: Users) -> UserOut:
    return await asyncio.to_thread(users.create, body)


@router.get("/users", response_model=UserList, summary="List users (admin)")
async def list_users(users: Users) -> UserList:
    return UserList(users=await asyncio.to_thread(users.list))


@router.get("/users/{user}", response_model=UserOut, summary="One user with their quotas (admin)")
async def get_user(user: str, users: Users) -> UserOut:
    return await asyncio.to_thread(users.get, user)


@router.patch("/users/{user}", response_model=UserOut, summary="Change a user's quotas and capabilities (admin)")
async def update_user(user: str, body: UserChange, users: Users, state: State) -> UserOut:
    updated = await asyncio.to_thread(users.update, user, body.model_dump(exclude_unset=True))
    state.keys.forget()  # keys carry their user's rate limit: at once here, within 10 s elsewhere
    return updated


@router.delete("/users/{user}", status_code=204, summary="Delete a user, their keys and their records (admin)")
async def delete_user(user: str, users: Users, state: State) -> Response:
    """Refused (409) while they own functions. Their functions' invocation records, logs, async jobs,
    builds and metrics are deleted too: a user created later with the same name sees none of them."""
    await state.recorder.flush()  # records still buffered here are deleted with the rest
    for key_id in await asyncio.to_thread(users.delete, user):
        state.keys.forget(key_id)
    return Response(status_code=204)


@router.post("/users/{user}/keys", status_code=201, response_model=KeyCreated, summary="Make an API key (admin)")
async def create_key(user: str, body: KeyCreate, users: Users, state: State) -> KeyCreated:
    """The response holds the key itself, shown this once; only its SHA-256 is stored. It also holds the
    key's AWS credentials for the Lambda API (boto3, the AWS CLI)."""
    return await asyncio.to_thread(users.create_key, user, body, state.keys.lambda_secret)


@router.get("/users/{user}/keys", response_model=KeyList, summary="A user's keys, without secrets (admin)")
async def list_keys(user: str, users: Users) -> KeyList:
    return KeyList(keys=await asyncio.to_thread(users.keys, user))


@router.delete("/keys/{key_id}", status_code=204, summary="Revoke an API key (admin)")
async def revoke_key(key_id: str, users: Users, state: State) -> Response:
    await asyncio.to_thread(users.revoke, key_id)
    state.keys.forget(key_id)
    return Response(status_code=204)
