"""Function management: validate, store code and versions, keep the registry and pools in step."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from hearth.api.auth import Principal
from hearth.api.builds.service import PreparedCode, collect_files
from hearth.api.errors import ApiError, field_error, not_found, storage_errors
from hearth.api.functions.capabilities import check_capabilities
from hearth.api.functions.provided import check_provided
from hearth.api.functions.quotas import check_quota
from hearth.api.functions.schemas import (
    FunctionCreate,
    FunctionOut,
    FunctionPatch,
    FunctionReplace,
    FunctionSettings,
    FunctionVersionOut,
)
from hearth.api.functions.specs import spec_from_version
from hearth.api.namespaces import (
    ADMIN,
    default_route,
    function_key,
    in_prefix,
    route_namespace,
    route_prefix,
    split_key,
)
from hearth.api.state import HearthState
from hearth.engine.sandbox import Backend
from hearth.images import catalog
from hearth.store.models import Function, FunctionVersion, User

# Settings kept in the version's `extra` JSON column rather than a column of their own.
EXTRA_FIELDS: tuple[str, ...] = (
    "batch",
    "description",
    "retries",
    "runtime",
    "schedule",
    "http_payload_format",
    "image",
    "image_id",
)
CODE_FIELDS: tuple[str, ...] = ("code", "zip_base64")
COLUMN_FIELDS = tuple(name for name in FunctionSettings.model_fields if name not in CODE_FIELDS + EXTRA_FIELDS)
# What a version's `extra` says about its dependency layer (set by the build, not by the user).
LAYER_KEYS: tuple[str, ...] = ("layer", "build_id")


def with_layer(values: dict[str, Any], prepared: PreparedCode) -> dict[str, Any]:
    """`values` packed for a version row, with what the build says about its dependency layer."""
    values = pack_extra(values)
    values["extra"].update(prepared.extra())
    return values


def pack_extra(values: dict[str, Any]) -> dict[str, Any]:
    """Move the settings that live in `extra` there (absent or null ones are dropped)."""
    extra = {name: values.pop(name) for name in EXTRA_FIELDS if name in values}
    values["extra"] = {name: value for name, value in extra.items() if value is not None}
    return values


class FunctionService:
    def __init__(self, state: HearthState) -> None:
        self.state = state
        self.write_lock = asyncio.Lock()  # registry and engine change under it (the follower takes it too)

    # ----- reads
    async def list(self, owner: str | None = None) -> list[FunctionOut]:
        """Every function, or only `owner`'s."""
        rows = await asyncio.to_thread(self._load_all)
        return [self._out(fn, ver) for fn, ver in rows if owner is None or fn.owner == owner]

    async def get(self, name: str, *, with_code: bool = True) -> FunctionOut:
        fn, ver = await asyncio.to_thread(self._load, name)
        out = self._out(fn, ver)
        if with_code:
            out.code = await asyncio.to_thread(self.state.code.read_source, ver.language, ver.code_path)
            out.files = await asyncio.to_thread(self._files, ver.code_path)
        return out

    def _files(self, code_path: str) -> list[str]:
        root = self.state.code.directory(code_path)
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    async def versions(self, name: str) -> list[FunctionVersionOut]:
        def load() -> list[FunctionVersion]:
            with self.state.sessions() as session:
                fn = self._find(session, name)
                return list(fn.versions)

        return [FunctionVersionOut.model_validate(v, from_attributes=True) for v in await asyncio.to_thread(load)]

    # ----- writes
    async def create(self, body: FunctionCreate, *, caller: Principal, owner: str | None = None) -> FunctionOut:
        """`owner`: whose namespace (default the caller's; the admin may name another)."""
        owner = owner or caller.user
        key = function_key(owner, body.name)
        values = self._complete(key, body.model_dump(exclude={"name"}))
        await asyncio.to_thread(self._check_capabilities_of, caller, owner, values)
        code, zipped = values.pop("code"), values.pop("zip_base64")
        # Dependencies install before the write lock is taken: a build may take minutes.
        prepared = await self._prepare_code(
            key, values["language"], values["handler"], code, zipped, values.get("runtime")
        )
        async with self.write_lock:
            with storage_errors():
                row_values = with_layer(values, prepared)
                fn, ver = await asyncio.to_thread(self._insert, key, row_values, prepared.stored, owner, caller)
            self.serve(fn.name, fn.owner, ver)
        await self.state.builds.attach_version(prepared.build_id, ver.version)
        return self._out(fn, ver)

    async def replace(self, name: str, body: FunctionReplace, *, caller: Principal) -> FunctionOut:
        if body.name is not None and body.name != split_key(name)[1]:
            raise field_error("name", f"must match the function in the path ({name!r}); renaming is not supported")
        return await self._update(name, body.model_dump(exclude={"name"}), replace=True, caller=caller)

    async def patch(self, name: str, body: FunctionPatch, *, caller: Principal) -> FunctionOut:
        return await self._update(name, body.model_dump(exclude_unset=True), replace=False, caller=caller)

    async def delete(self, name: str) -> None:
        async with self.write_lock:
            with storage_errors():
                await asyncio.to_thread(self._delete, name)
            self.withdraw(name)

    async def _update(self, name: str, changes: dict[str, Any], *, replace: bool, caller: Principal) -> FunctionOut:
        code, zipped = changes.get("code"), changes.get("zip_base64")
        prepared: PreparedCode | None = None
        if code is not None or zipped is not None:
            # New code is stored and its dependencies installed outside the write lock, from a snapshot
            # of the settings; the version is then written from the settings current under the lock.
            fn, current = await asyncio.to_thread(self._load, name)
            snapshot = self._merge(name, fn, current, changes, replace=replace)
            await asyncio.to_thread(self._check_capabilities_of, caller, fn.owner, snapshot)  # before any build
            prepared = await self._prepare_code(
                name, snapshot["language"], snapshot["handler"], code, zipped, snapshot.get("runtime")
            )
        async with self.write_lock:
            fn, current = await asyncio.to_thread(self._load, name)
            values = self._merge(name, fn, current, changes, replace=replace)
            if prepared is None:
                stored: tuple[str, str, int] = (current.code_path, current.code_sha256, current.code_size)
                layer = {key: value for key, value in (current.extra or {}).items() if key in LAYER_KEYS}
            else:
                if prepared.language != values["language"]:
                    raise ApiError(409, "Conflict", "the function's language changed while its code was prepared")
                stored = (prepared.stored.path, prepared.stored.sha256, prepared.stored.size)
                layer = prepared.extra()
            await asyncio.to_thread(self._check_quota_of, fn.owner, name, values)
            await asyncio.to_thread(self._check_capabilities_of, caller, fn.owner, values)
            extra_values = pack_extra(values)
            extra_values["extra"].update(layer)
            with storage_errors():
                fn, ver = await asyncio.to_thread(self._append_version, name, extra_values, stored)
            self.serve(fn.name, fn.owner, ver)
        if prepared is not None:
            await self.state.builds.attach_version(prepared.build_id, ver.version)
        return self._out(fn, ver)

    def _merge(
        self, name: str, fn: Function, current: FunctionVersion, changes: dict[str, Any], *, replace: bool
    ) -> dict[str, Any]:
        """The new version's settings (without its code): PUT replaces them all, PATCH only the given ones."""
        if replace:
            values = dict(changes)
        else:  # PATCH: unset or null fields keep the current version's value (null clears an extra one)
            values = {field: getattr(current, field) for field in COLUMN_FIELDS}
            values.update({field: (current.extra or {}).get(field) for field in EXTRA_FIELDS})
            values["route"] = fn.route
            values.update(
                {k: v for k, v in changes.items() if (v is not None or k in EXTRA_FIELDS) and k not in CODE_FIELDS}
            )
        for field in CODE_FIELDS:
            values.pop(field, None)
        new_code = any(changes.get(field) is not None for field in CODE_FIELDS)
        if not new_code and values["language"] != current.language:
            raise field_error("code", "changing the language needs new code")
        if not replace and "runtime" not in changes and values["language"] != current.language:
            values["runtime"] = None  # the new language's default runtime
        return self._complete(name, values, previous_route=fn.route)

    async def _prepare_code(
        self, name: str, language: str, handler: str, code: str | None, zipped: str | None, runtime: str | None
    ) -> PreparedCode:
        if code is not None:
            self._check_code(code)
        files, field = collect_files(language, handler, code, zipped, self.state.settings)
        with storage_errors():
            return await self.state.builds.prepare(name, language, files, field, runtime)

    # ----- what this node serves (under write_lock; also the follower's, for changes made elsewhere)
    def serve(self, name: str, owner: str, ver: FunctionVersion) -> None:
        """`ver` becomes what this node serves of `name`: the old version's sandboxes retire."""
        spec = spec_from_version(ver, name, self.state.code.root)
        self.state.registry.set_owner(name, owner)
        self.state.registry.put(spec)
        self.state.engine.deploy(spec)

    def withdraw(self, name: str) -> None:
        self.state.registry.remove(name)
        self.state.engine.retire(name)

    # ----- validation of values that depend on configuration
    def _check_code(self, code: str) -> None:
        limit = self.state.settings.max_code_bytes
        if len(code.encode()) > limit:
            raise field_error("code", f"is larger than the limit of {limit} bytes")

    def _complete(self, key: str, values: dict[str, Any], previous_route: str | None = None) -> dict[str, Any]:
        settings = self.state.settings
        values["route"] = values.get("route") or default_route(key)
        prefix = route_prefix(split_key(key)[0])
        route = values["route"]
        if prefix is not None and route != previous_route and not in_prefix(route, prefix):
            raise field_error("route", f"must start with {prefix}: routes are claimed per namespace")
        values["backend"] = values.get("backend") or settings.default_backend
        backend = self.state.engine.backends.get(values["backend"])
        if backend is None:
            known = ", ".join(sorted(self.state.engine.backends))
            raise field_error("backend", f"unknown backend {values['backend']!r} (known: {known})")
        available, reason = backend.availability()
        if not available:
            raise field_error("backend", f"backend {values['backend']!r} is not available here: {reason}")
        # Before the runtime's check: a backend that runs no custom runtime is refused naming those that do.
        check_provided(values, backend, self.state.engine.backends)
        values["runtime"] = self._runtime(values, backend)
        refused = backend.refuse(values)
        if refused:
            raise field_error("backend", refused)
        if values["min_warm"] > values["max_instances"]:
            raise field_error("min_warm", "must not exceed max_instances")
        return values

    def _runtime(self, values: dict[str, Any], backend: Backend) -> str:
        """The runtime the version runs on: the one named (checked against what this host offers), else the default."""
        language, named = values["language"], values.get("runtime")
        if named is None:
            return catalog.default_runtime(language)
        named = catalog.ALIASES.get(named, named)  # provided.al2023 runs as (and is reported as) provided
        if named not in catalog.CATALOG:
            raise field_error("runtime", f"unknown runtime {named!r} (known: {', '.join(catalog.RUNTIMES)})")
        if catalog.language_of(named) != language:
            raise field_error("runtime", f"{named} is not a {language} runtime")
        offered = backend.runtimes()
        if named not in offered:
            raise field_error(
                "runtime",
                f"runtime {named!r} is not available on the {backend.name} backend here "
                f"(available: {', '.join(offered) or 'none'})",
            )
        return str(named)

    # ----- database work (runs in a worker thread)
    def _find(self, session: Session, name: str) -> Function:
        fn = session.scalar(select(Function).where(Function.name == name).options(selectinload(Function.versions)))
        if fn is None:
            raise not_found(name)
        return fn

    def _load(self, name: str) -> tuple[Function, FunctionVersion]:
        with self.state.sessions() as session:
            fn = self._find(session, name)
            return fn, fn.versions[-1]

    def _load_all(self) -> list[tuple[Function, FunctionVersion]]:
        with self.state.sessions() as session:
            rows = session.execute(
                select(Function, FunctionVersion)
                .join(FunctionVersion, FunctionVersion.function_id == Function.id)
                .where(FunctionVersion.version == Function.current_version)
                .order_by(Function.name)
            ).all()
            return [(fn, ver) for fn, ver in rows]

    def _route_taken(self, session: Session, route: str, other_than: str | None) -> bool:
        owner = session.scalar(select(Function.name).where(Function.route == route))
        return owner is not None and owner != other_than

    def _check_route_claim(self, session: Session, owner: str, route: str) -> None:
        """The admin's routes stay out of every user's prefix (users' own stay inside theirs: _complete)."""
        namespace = route_namespace(route)
        if owner == ADMIN and session.get(User, namespace) is not None:
            raise ApiError(409, "Conflict", f"routes under /{namespace}/ belong to the namespace of user {namespace!r}")

    def _check_quota_of(self, owner: str, name: str, values: dict[str, Any]) -> None:
        with self.state.sessions() as session:
            check_quota(session, owner, name, values)

    def _check_capabilities_of(self, caller: Principal, owner: str, values: dict[str, Any]) -> None:
        with self.state.sessions() as session:
            check_capabilities(session, caller, owner, values)

    def _insert(
        self, name: str, values: dict[str, Any], stored: Any, owner: str, caller: Principal
    ) -> tuple[Function, FunctionVersion]:
        with self.state.sessions() as session:
            check_quota(session, owner, name, values)
            check_capabilities(session, caller, owner, values)
            if session.scalar(select(Function.id).where(Function.name == name)) is not None:
                raise ApiError(409, "Conflict", f"a function named {name!r} already exists")
            if self._route_taken(session, values["route"], None):
                raise ApiError(409, "Conflict", f"route {values['route']!r} is already used by another function")
            self._check_route_claim(session, owner, values["route"])
            now = datetime.now(UTC)
            fn = Function(
                name=name, route=values["route"], current_version=1, owner=owner, created_at=now, updated_at=now
            )
            ver = FunctionVersion(
                version=1,
                code_path=stored.path,
                code_sha256=stored.sha256,
                code_size=stored.size,
                created_at=now,
                **values,
            )
            fn.versions.append(ver)
            session.add(fn)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                raise ApiError(
                    409, "Conflict", f"a function named {name!r} or route {values['route']!r} exists"
                ) from None
            return fn, ver

    def _append_version(
        self, name: str, values: dict[str, Any], code: tuple[str, str, int]
    ) -> tuple[Function, FunctionVersion]:
        with self.state.sessions() as session:
            fn = self._find(session, name)
            if self._route_taken(session, values["route"], name):
                raise ApiError(409, "Conflict", f"route {values['route']!r} is already used by another function")
            if values["route"] != fn.route:
                self._check_route_claim(session, fn.owner, values["route"])
            now = datetime.now(UTC)
            path, sha, size = code
            ver = FunctionVersion(
                version=fn.current_version + 1,
                code_path=path,
                code_sha256=sha,
                code_size=size,
                created_at=now,
                **values,
            )
            fn.versions.append(ver)
            fn.current_version = ver.version
            fn.route = values["route"]
            fn.updated_at = now
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                raise ApiError(409, "Conflict", f"route {values['route']!r} is already used") from None
            return fn, ver

    def _delete(self, name: str) -> None:
        with self.state.sessions() as session:
            fn = self._find(session, name)
            session.delete(fn)
            session.commit()

    # ----- output
    def _out(self, fn: Function, ver: FunctionVersion) -> FunctionOut:
        return FunctionOut(
            name=fn.name,
            owner=fn.owner,
            version=ver.version,
            route=ver.route,
            language=ver.language,  # type: ignore[arg-type]
            handler=ver.handler,
            timeout_s=ver.timeout_s,
            memory_mb=ver.memory_mb,
            cpus=ver.cpus,
            env=dict(ver.env or {}),
            backend=ver.backend,
            min_warm=ver.min_warm,
            max_instances=ver.max_instances,
            concurrency=ver.concurrency,
            auth=ver.auth,
            network=ver.network,
            batch=(ver.extra or {}).get("batch"),
            description=(ver.extra or {}).get("description") or "",
            retries=(ver.extra or {}).get("retries"),
            schedule=(ver.extra or {}).get("schedule"),
            http_payload_format=(ver.extra or {}).get("http_payload_format") or "2.0",
            runtime=(ver.extra or {}).get("runtime") or catalog.default_runtime(ver.language),
            layer=(ver.extra or {}).get("layer"),
            build_id=(ver.extra or {}).get("build_id"),
            image=(ver.extra or {}).get("image"),
            image_id=(ver.extra or {}).get("image_id"),
            code_sha256=ver.code_sha256,
            code_size=ver.code_size,
            created_at=fn.created_at,
            updated_at=fn.updated_at,
            instances=self.state.engine.instances_of(fn.name),
        )
