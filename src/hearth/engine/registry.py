"""The deployed functions as the engine serves them: name and route to the current version's spec.

Kept in memory so the invocation path never reads the database; the function service updates it
on every create, update and delete (with specs built by hearth.api.functions.specs), and the
follower (hearth.api.functions.follow) loads it from the store at start and brings in changes made
on other nodes.
"""

from __future__ import annotations

from hearth.engine.sandbox import FunctionSpec


class FunctionRegistry:
    def __init__(self) -> None:
        self._by_name: dict[str, FunctionSpec] = {}
        self._by_route: dict[str, str] = {}
        self._owners: dict[str, str] = {}  # function -> the user who owns it

    def put(self, spec: FunctionSpec) -> None:
        old = self._by_name.get(spec.name)
        if old is not None and self._by_route.get(old.route) == spec.name:  # another may have taken it since
            self._by_route.pop(old.route, None)
        self._by_name[spec.name] = spec
        self._by_route[spec.route] = spec.name

    def set_owner(self, name: str, owner: str) -> None:
        self._owners[name] = owner

    def owner_of(self, name: str) -> str | None:
        return self._owners.get(name)

    def remove(self, name: str) -> FunctionSpec | None:
        self._owners.pop(name, None)
        spec = self._by_name.pop(name, None)
        if spec is not None and self._by_route.get(spec.route) == name:
            self._by_route.pop(spec.route, None)
        return spec

    def get(self, name: str) -> FunctionSpec | None:
        return self._by_name.get(name)

    def by_route(self, path: str) -> FunctionSpec | None:
        """Exact route first, then the longest route that is a path prefix (`/api` serves `/api/x`)."""
        name = self._by_route.get(path)
        if name is None:
            probe = path
            while "/" in probe.rstrip("/") and name is None:
                probe = probe.rstrip("/").rsplit("/", 1)[0] or "/"
                name = self._by_route.get(probe)
                if probe == "/":
                    break
        return self._by_name.get(name) if name else None

    def all(self) -> list[FunctionSpec]:
        return list(self._by_name.values())
