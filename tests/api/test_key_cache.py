"""The key ring's cache stays bounded under a flood of made-up keys, and loads key rows off the event loop.

Against a real SQLite store (migrated as the server migrates it), without a server process: the
cache is the process's own memory, which is what a flood of well-formed tokens would grow."""

from __future__ import annotations

import asyncio
import secrets
import threading
from pathlib import Path

from hearth.api.auth import KEY_CACHE_SIZE, KeyRing, new_user_key
from hearth.store.db import make_engine, make_sessionmaker, migrate
from hearth.store.models import ApiKey, User


def key_ring(tmp_path: Path) -> tuple[KeyRing, str]:
    url = f"sqlite:///{tmp_path / 'hearth.db'}"
    migrate(url)
    sessions = make_sessionmaker(make_engine(url))
    key_id, key, sha = new_user_key()
    with sessions.begin() as session:
        session.add(User(name="alice"))
        session.flush()
        session.add(ApiKey(id=key_id, user_name="alice", sha256=sha, scopes=["read"]))
    return KeyRing("admin-" + secrets.token_hex(8), sessions), key


def test_a_flood_of_made_up_keys_leaves_the_cache_bounded(tmp_path: Path) -> None:
    keys, real = key_ring(tmp_path)
    for _ in range(KEY_CACHE_SIZE + 1500):
        assert keys.resolve(f"hk_k{secrets.token_hex(6)}_{secrets.token_urlsafe(8)}") is None
    assert len(keys._cache) <= KEY_CACHE_SIZE
    principal = keys.resolve(real)  # a real key still resolves, and a forged secret for its id does not
    assert principal is not None and principal.user == "alice"
    assert keys.resolve(real.rsplit("_", 1)[0] + "_forged") is None


def test_a_key_row_is_loaded_off_the_event_loop(tmp_path: Path) -> None:
    keys, real = key_ring(tmp_path)
    loaded_in: list[int] = []
    load = keys._load

    def recording_load(key_id: str):  # type: ignore[no-untyped-def]
        loaded_in.append(threading.get_ident())
        return load(key_id)

    keys._load = recording_load  # type: ignore[method-assign]

    async def authenticate() -> int:
        await keys.prefetch(real)
        assert keys.resolve(real) is not None  # found in the cache: no second load
        return threading.get_ident()

    loop_thread = asyncio.run(authenticate())
    assert len(loaded_in) == 1 and loaded_in[0] != loop_thread
