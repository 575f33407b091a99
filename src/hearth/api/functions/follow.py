"""Keeps this node's function registry and engine in step with the store.

At start it loads every function; then, every `sync_interval_s`, it compares each function's
current version in the (possibly shared) database with what this node serves, so that functions
created, updated or deleted through another node (or another process on this one) are served or
retired here as the function service does for its own changes. A new version's code and layer are
fetched from the store first (hearth.store.shared_files). Changes made through this node are
already in its registry and cost one small query to confirm.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import select

from hearth.api.functions.service import FunctionService
from hearth.api.state import HearthState
from hearth.periodic import Periodic
from hearth.store.models import Function, FunctionVersion

log = logging.getLogger(__name__)


class FunctionFollower(Periodic):
    what = "following functions changed on other nodes"

    def __init__(self, state: HearthState, service: FunctionService, interval_s: float) -> None:
        self.state, self.service, self.interval_s = state, service, interval_s
        self._missing: set[tuple[str, int]] = set()  # versions whose files are nowhere: warned once

    def pause_s(self) -> float:
        return self.interval_s

    async def tick(self) -> None:
        served, withdrawn = await self.sync()
        if served or withdrawn:
            log.info("changes made elsewhere: now serving %d new versions, %d functions retired", served, withdrawn)

    async def sync(self) -> tuple[int, int]:
        """Serve what the store says; returns (versions served now, functions withdrawn)."""
        # Under the service's lock: a change this node is making is either all in the store and the
        # registry, or in neither, so the comparison never undoes it.
        async with self.service.write_lock:
            current = await asyncio.to_thread(self._current_versions)
            registry = self.state.registry
            gone = [spec.name for spec in registry.all() if spec.name not in current]
            for name in gone:
                self.service.withdraw(name)
            changed = [
                name
                for name, version in current.items()
                if (spec := registry.get(name)) is None or spec.version != version
            ]
            if not changed:
                return 0, len(gone)
            everything = len(changed) == len(current)  # at start: one query, however many functions
            rows = await asyncio.to_thread(self._versions_of, None if everything else changed)
            for name, owner, row in rows:
                await asyncio.to_thread(self._fetch_files, name, row)
                self.service.serve(name, owner, row)
            return len(rows), len(gone)

    def _fetch_files(self, name: str, row: FunctionVersion) -> None:
        """Makes the version's code and layer present here; a version served without them fails its calls."""
        if self.state.code.ensure_version(row.code_path, (row.extra or {}).get("layer")):
            return
        if (name, row.version) not in self._missing:
            self._missing.add((name, row.version))
            log.warning(
                "function %s v%d: its code or layer is neither here nor in the store "
                "(the node that deployed it does not share code: HEARTH_SHARE_CODE)",
                name,
                row.version,
            )

    def _current_versions(self) -> dict[str, int]:
        with self.state.sessions() as session:
            return {name: version for name, version in session.execute(select(Function.name, Function.current_version))}

    def _versions_of(self, names: list[str] | None) -> list[tuple[str, str, FunctionVersion]]:
        """The current version of each of `names` (None: of every function), with name and owner."""
        query = select(Function.name, Function.owner, FunctionVersion).join(
            FunctionVersion,
            (FunctionVersion.function_id == Function.id) & (FunctionVersion.version == Function.current_version),
        )
        if names is not None:
            query = query.where(Function.name.in_(names))
        with self.state.sessions() as session:
            return [(name, owner, row) for name, owner, row in session.execute(query)]
