"""The deployed functions as the engine serves them: name and route to the current version's spec.

Kept in memory so the invocation path never reads the database; the function service updates it
on every create, update and delete, and the follower (hearth.api.functions.follow) loads it from
the store at start and brings in changes made on other nodes.
"""

from __future__ import annotations

from pathlib import Path

from hearth.engine.sandbox import FunctionSpec
from hearth.packaging.deps import LAYER_SUBDIR, LAYERS_DIR
from hearth.store.models import FunctionVersion


def spec_from_version(row: FunctionVersion, name: str, code_root: Path) -> FunctionSpec:
    return FunctionSpec(
        name=name,
        version=row.version,
        language=row.language,  # type: ignore[arg-type]
        handler=row.handler,
        code_dir=code_root / row.code_path,
        timeout_s=row.timeout_s,
        memory_mb=row.memory_mb,
        cpus=row.cpus,
        env=dict(row.env or {}),
        backend=row.backend,
        min_warm=row.min_warm,
        max_instances=row.max_instances,
        concurrency=row.concurrency,
        network=row.network,
        route=row.route,
        auth=row.auth,
        extra=dict(row.extra or {}),
        layer_dir=layer_dir(code_root, row.language, (row.extra or {}).get("layer")),
        runtime=str((row.extra or {}).get("runtime") or ""),
    )


def layer_dir(code_root: Path, language: str, layer: str | None) -> Path | None:
    """A version's dependency layer: `<code root>/layers/<key>/<python|node_modules>` (see hearth.packaging)."""
    if not layer:
        return None
    return code_root / LAYERS_DIR / layer / LAYER_SUBDIR[language]


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
