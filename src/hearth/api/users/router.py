"""/api/users and /api/keys: admin-only management of users, their quotas and their API keys."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request, Response

from hearth.api.auth import require_api_key
from hearth.api.state import HearthState
from hearth.api.users.schemas import KeyCreate, KeyCreated, KeyList, UserChange, UserCreate, UserList, UserOut
from hearth.api.users.service import UserStore

router = APIRouter(prefix="/api", tags=["users"], dependencies=[Depends(require_api_key)])


def state_of(request: Request) -> HearthState:
    return request.app.state.hearth  # type: ignore[no-any-return]


def store(request: Request) -> UserStore:
    return UserStore(state_of(request).sessions)


@router.post("/users", status_code=201, response_model=UserOut, summary="Create a user (admin)")
async def create_user(body: UserCreate, request: Request) -> UserOut:
    return await asyncio.to_thread(store(request).create, body)


@router.get("/users", response_model=UserList, summary="List users (admin)")
async def list_users(request: Request) -> UserList:
    return UserList(users=await asyncio.to_thread(store(request).list))


@router.get("/users/{user}", response_model=UserOut, summary="One user with their quotas (admin)")
async def get_user(user: str, request: Request) -> UserOut:
    return await asyncio.to_thread(store(request).get, user)


@router.patch("/users/{user}", response_model=UserOut, summary="Change a user's quotas and capabilities (admin)")
async def update_user(user: str, body: UserChange, request: Request) -> UserOut:
    updated = await asyncio.to_thread(store(request).update, user, body.model_dump(exclude_unset=True))
    state_of(request).keys.forget()  # keys carry their user's rate limit: at once here, within 10 s elsewhere
    return updated


@router.delete("/users/{user}", status_code=204, summary="Delete a user, their keys and their records (admin)")
async def delete_user(user: str, request: Request) -> Response:
    """Refused (409) while they own functions. Their functions' invocation records, logs, async jobs,
    builds and metrics are deleted too: a user created later with the same name sees none of them."""
    await state_of(request).recorder.flush()  # records still buffered here are deleted with the rest
    for key_id in await asyncio.to_thread(store(request).delete, user):
        state_of(request).keys.forget(key_id)
    return Response(status_code=204)


@router.post("/users/{user}/keys", status_code=201, response_model=KeyCreated, summary="Make an API key (admin)")
async def create_key(user: str, body: KeyCreate, request: Request) -> KeyCreated:
    """The response holds the key itself, shown this once; only its SHA-256 is stored. It also holds the
    key's AWS credentials for the Lambda API (boto3, the AWS CLI)."""
    return await asyncio.to_thread(store(request).create_key, user, body, state_of(request).keys.lambda_secret)


@router.get("/users/{user}/keys", response_model=KeyList, summary="A user's keys, without secrets (admin)")
async def list_keys(user: str, request: Request) -> KeyList:
    return KeyList(keys=await asyncio.to_thread(store(request).keys, user))


@router.delete("/keys/{key_id}", status_code=204, summary="Revoke an API key (admin)")
async def revoke_key(key_id: str, request: Request) -> Response:
    await asyncio.to_thread(store(request).revoke, key_id)
    state_of(request).keys.forget(key_id)
    return Response(status_code=204)
