"""Deploy-time preparation of code: store the bundle, build or reuse its dependency layer, record the build.

Builds run inside the deploy request (the new version goes live only once its layer is complete),
while their progress is visible to anyone polling `GET /api/functions/{name}/builds/{id}`: running
builds are kept in memory with their growing log and written to the store when they finish.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from hearth.api.builds.schemas import BuildOut
from hearth.api.errors import ApiError, field_error
from hearth.config import Settings
from hearth.packaging.builder import BuildFailed, LayerBuilder
from hearth.packaging.bundle import BundleError, handler_files, unpack_zip
from hearth.packaging.deps import DEFAULT_NPM_REGISTRY, ManifestError, find_dependencies
from hearth.store.code import SOURCE_FILE, CodeStore, StoredCode
from hearth.store.models import Build

log = logging.getLogger(__name__)
MAX_LOG_CHARS = 1024 * 1024
IMAGE_NOTE = "IMAGE"  # the one file an image function's bundle holds
LOG_TAIL_CHARS = 3000


@dataclass(frozen=True)
class PreparedCode:
    stored: StoredCode
    language: str
    layer: str | None = None  # layer key, relative to the layers root
    build_id: str | None = None

    def extra(self) -> dict[str, str]:
        """What a version keeps in its `extra` column about its layer."""
        return {"layer": self.layer, "build_id": self.build_id} if self.layer and self.build_id else {}


class LiveLog:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.truncated = False

    def append(self, text: str) -> None:
        if self.truncated:
            return
        if self.size + len(text) > MAX_LOG_CHARS:
            text = text[: MAX_LOG_CHARS - self.size] + "\n[log truncated]\n"
            self.truncated = True
        self.parts.append(text)
        self.size += len(text)

    def text(self) -> str:
        return "".join(self.parts)


def collect_files(
    language: str, handler: str, code: str | None, zip_base64: str | None, settings: Settings
) -> tuple[dict[str, bytes], str]:
    """(the bundle's files, the request field they came from): one source file, or an unpacked zip."""
    if language == "provided" and code is None and zip_base64 is None:  # an image function: its code is the image
        return {IMAGE_NOTE: b"the code of this function is its image\n"}, "image"
    if zip_base64 is None:
        return {SOURCE_FILE[language]: (code or "").encode()}, "code"
    if len(zip_base64) > (settings.max_zip_bytes + 2) // 3 * 4 + 4:
        raise field_error("zip_base64", f"the zip is over the limit of {settings.max_zip_bytes} bytes")
    try:
        data = base64.b64decode(zip_base64, validate=True)
    except (binascii.Error, ValueError):
        raise field_error("zip_base64", "is not valid base64") from None
    try:
        files = unpack_zip(data, max_zip_bytes=settings.max_zip_bytes, max_unzipped_bytes=settings.max_unzipped_bytes)
    except BundleError as exc:
        raise field_error("zip_base64", str(exc)) from None
    wanted = handler_files(language, handler)
    if not any(name in files for name in wanted):
        shown = ", ".join(sorted(files)[:10]) + (", ..." if len(files) > 10 else "")
        needs = " or ".join(repr(name) for name in wanted)
        raise field_error("handler", f"{handler!r} needs the file {needs}, which the zip does not hold ({shown})")
    return files, "zip_base64"


def new_build_id() -> str:
    return "bld_" + secrets.token_hex(8)


class BuildService:
    def __init__(self, sessions: sessionmaker[Session], code: CodeStore, builder: LayerBuilder, node: str) -> None:
        self.sessions = sessions
        self.code = code
        self.builder = builder
        self.node = node  # builds this node runs carry it: at start, only its own unfinished ones are failed
        self._live: dict[str, tuple[Build, LiveLog]] = {}

    # ----- lifecycle
    async def recover(self) -> int:
        """Builds this node's previous process left running were cut off: mark them failed."""

        def mark() -> int:
            with self.sessions() as session:
                result = session.execute(
                    update(Build)
                    .where(Build.status == "running", or_(Build.node == self.node, Build.node.is_(None)))
                    .values(status="failed", error="interrupted: Hearth stopped during the build")
                )
                session.commit()
                return int(result.rowcount or 0)  # type: ignore[attr-defined]

        return await asyncio.to_thread(mark)

    # ----- deploy path
    async def prepare(
        self, function: str, language: str, files: dict[str, bytes], field: str, runtime: str | None = None
    ) -> PreparedCode:
        """Store `files` and make their dependency layer ready; ApiError if the dependencies do not install.

        The layer is built for `runtime` (`python3.13`; default: the language's default runtime).
        """
        try:
            registry = (await self.builder.index()).npm_registry if language == "javascript" else DEFAULT_NPM_REGISTRY
            deps = find_dependencies(language, files, npm_registry=registry)
        except ManifestError as exc:
            raise field_error(field, str(exc)) from None
        try:
            stored = await asyncio.to_thread(self.code.put_files, files)
        except BundleError as exc:
            raise field_error(field, str(exc)) from None
        if deps is None:
            return PreparedCode(stored, language)
        now = datetime.now(UTC)
        build = Build(
            id=new_build_id(),
            function_name=function,
            language=language,
            manifest=deps.manifest,
            layer_sha256="",
            status="running",
            cached=False,
            log="",
            created_at=now,
            node=self.node,
        )
        live = LiveLog()
        started = time.perf_counter()
        await asyncio.to_thread(self._save, build)
        self._live[build.id] = (build, live)
        try:
            key, runtime_version = await self.builder.key_for(deps, runtime or language)
            build.layer_sha256 = key
            live.append(f"installing {deps.manifest} for {language} {runtime_version} into layer {key[:12]}\n")
            if await asyncio.to_thread(self.code.fetch_layer, key):
                live.append("the layer was built on another node: fetched it from the store\n")
            layer = await self.builder.ensure(deps, key, runtime_version, live.append, runtime or language)
            await asyncio.to_thread(self.code.share_layer, key)
        except BuildFailed as exc:
            live.append(f"build failed: {exc}\n")
            await self._finish(build, live, started, "failed", error=str(exc))
            raise ApiError(
                422,
                "BuildFailed",
                f"installing {deps.manifest} failed: {exc}",
                build_id=build.id,
                log_tail=live.text()[-LOG_TAIL_CHARS:],
            ) from None
        except BaseException as exc:  # cancelled (client gone, shutdown) or unexpected: never leave it running
            await self._finish(build, live, started, "failed", error=f"build aborted: {type(exc).__name__}")
            raise
        build.cached = layer.cached
        build.layer_bytes, build.layer_files = layer.bytes, layer.files
        await self._finish(build, live, started, "succeeded")
        return PreparedCode(stored, language, layer.key, build.id)

    async def attach_version(self, build_id: str | None, version: int) -> None:
        if build_id is None:
            return

        def attach() -> None:
            with self.sessions() as session:
                session.execute(update(Build).where(Build.id == build_id).values(version=version))
                session.commit()

        await asyncio.to_thread(attach)

    async def _finish(self, build: Build, live: LiveLog, started: float, status: str, error: str | None = None) -> None:
        build.status = status
        build.error = error
        build.log = live.text()
        build.finished_at = datetime.now(UTC)
        build.duration_ms = (time.perf_counter() - started) * 1000
        try:
            await asyncio.to_thread(self._save, build)
        finally:
            self._live.pop(build.id, None)

    def _save(self, build: Build) -> None:
        with self.sessions() as session:
            session.merge(build)
            session.commit()

    # ----- reads
    async def list(self, function: str, limit: int) -> list[BuildOut]:
        def load() -> list[Build]:
            with self.sessions() as session:
                query = (
                    select(Build)
                    .where(Build.function_name == function)
                    .order_by(Build.created_at.desc(), Build.id.desc())
                    .limit(limit)
                )
                return list(session.scalars(query))

        rows = await asyncio.to_thread(load)
        return [self._out(self._current(row), with_log=False) for row in rows]

    async def get(self, function: str, build_id: str, log_offset: int = 0) -> BuildOut:
        def load() -> Build | None:
            with self.sessions() as session:
                return session.get(Build, build_id)

        row = await asyncio.to_thread(load)
        if row is None or row.function_name != function:
            raise ApiError(404, "NotFound", f"function {function!r} has no build {build_id!r}")
        return self._out(self._current(row), with_log=True, log_offset=log_offset)

    def _current(self, row: Build) -> Build:
        """The in-memory state of a running build (its log grows there), else the stored row."""
        live = self._live.get(row.id)
        if live is None:
            return row
        build, log_ = live
        build.log = log_.text()
        return build

    @staticmethod
    def _out(row: Build, *, with_log: bool, log_offset: int = 0) -> BuildOut:
        text = row.log or ""
        return BuildOut(
            id=row.id,
            function=row.function_name,
            language=row.language,
            manifest=row.manifest,
            layer_sha256=row.layer_sha256,
            status=row.status,  # type: ignore[arg-type]
            cached=row.cached,
            version=row.version,
            error=row.error,
            layer_bytes=row.layer_bytes,
            layer_files=row.layer_files,
            created_at=row.created_at,
            finished_at=row.finished_at,
            duration_ms=row.duration_ms,
            log=text[max(0, log_offset) :] if with_log else None,
            log_size=len(text),
        )
