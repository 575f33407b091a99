"""Keeps this node's function registry and engine in step with the store, for changes made elsewhere.

Another node (or another process on this one) may create, update or delete functions in the shared
database; every `sync_interval_s` this node compares each function's current version with what it
serves, fetches the code and layer of new versions from the store (hearth.store.shared_files), and
deploys or retires them exactly as the function service does for its own changes. Changes made
through this node are already in its registry and cost one small query to confirm.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import select

from hearth.api.functions.service import FunctionService
from hearth.api.state import HearthState
from hearth.engine.registry import spec_from_version
from hearth.periodic import Periodic
from hearth.store.models import Function, FunctionVersion

log = logging.getLogger(__name__)


class FunctionFollower(Periodic):
    what = "following functions changed on other nodes"

    def __init__(self, state: HearthState, service: FunctionService, interval_s: float) -> None:
        self.state, self.service, self.interval_s = state, service, interval_s
        self._missing: set[tuple[str, int]] = set()  # versions whose files no node shared: warned once

    def pause_s(self) -> float:
        return self.interval_s

    async def tick(self) -> None:
        # Under the service's lock: a change this node is making is either all in the store and the
        # registry, or in neither, so the comparison never undoes it.
        async with self.service.write_lock:
            current = await asyncio.to_thread(self._current_versions)
            registry = self.state.registry
            for spec in registry.all():
                if spec.name not in current:
                    log.info("function %s was deleted on another node: retiring it here", spec.name)
                    registry.remove(spec.name)
                    self.state.engine.retire(spec.name)
            changed = [
                name
                for name, version in current.items()
                if (spec := registry.get(name)) is None or spec.version != version
            ]
            if changed:
                await self._deploy(changed)

    async def _deploy(self, names: list[str]) -> None:
        for name, owner, row in await asyncio.to_thread(self._versions_of, names):
            layer = (row.extra or {}).get("layer")
            if not await asyncio.to_thread(self.state.code.ensure_version, row.code_path, layer):
                if (name, row.version) not in self._missing:
                    self._missing.add((name, row.version))
                    log.warning(
                        "function %s v%d: its code or layer is neither here nor in the store "
                        "(the node that deployed it does not share code: HEARTH_SHARE_CODE)",
                        name,
                        row.version,
                    )
                continue
            spec = spec_from_version(row, name, self.state.code.root)
            self.state.registry.set_owner(name, owner)
            self.state.registry.put(spec)
            self.state.engine.deploy(spec)
            log.info("function %s v%d was deployed on another node: serving it here", name, row.version)

    def _current_versions(self) -> dict[str, int]:
        with self.state.sessions() as session:
            return {name: version for name, version in session.execute(select(Function.name, Function.current_version))}

    def _versions_of(self, names: list[str]) -> list[tuple[str, str, FunctionVersion]]:
        with self.state.sessions() as session:
            rows = session.execute(
                select(Function.name, Function.owner, FunctionVersion)
                .join(FunctionVersion, FunctionVersion.function_id == Function.id)
                .where(FunctionVersion.version == Function.current_version, Function.name.in_(names))
            )
            return [(name, owner, row) for name, owner, row in rows]
