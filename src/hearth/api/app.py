"""The FastAPI application and its lifespan: everything Hearth's API process owns is built here."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import ORJSONResponse

from hearth import __version__
from hearth.api import health
from hearth.api import runtimes as runtimes_router
from hearth.api.auth import KeyRing, load_or_create_api_key, load_or_create_dashboard_key
from hearth.api.backends import router as backends_router
from hearth.api.builds import router as builds_router
from hearth.api.builds.service import BuildService
from hearth.api.errors import install_error_handlers
from hearth.api.functions import router as functions_router
from hearth.api.functions.follow import FunctionFollower
from hearth.api.functions.service import FunctionService
from hearth.api.invocations import router as invocations_router
from hearth.api.invoke import router as invoke_router
from hearth.api.invoke.fast_path import HttpTriggerFastPath
from hearth.api.jobs import router as jobs_router
from hearth.api.jobs.lifecycle import start_scheduler
from hearth.api.json_bodies import JsonBodies
from hearth.api.lambda_api import router as lambda_router
from hearth.api.metrics import router as metrics_router
from hearth.api.metrics.lifecycle import start_metrics
from hearth.api.state import HearthState
from hearth.api.users import router as users_router
from hearth.config import Settings, get_settings
from hearth.engine.backends.docker import DockerBackend
from hearth.engine.backends.gvisor import GVisorBackend
from hearth.engine.backends.vm.backend import MicroVMBackend, firecracker_backend
from hearth.engine.engine import Engine, EngineConfig
from hearth.engine.registry import FunctionRegistry
from hearth.engine.sandbox import Backend, LambdaIdentity
from hearth.images import containers
from hearth.metrics.recorder import InvocationRecorder
from hearth.metrics.writer import RecordWriter
from hearth.packaging.builder import LayerBuilder
from hearth.packaging.deps import LAYERS_DIR
from hearth.packaging.index_config import read_host_config
from hearth.packaging.runtime_version import RuntimeVersions
from hearth.packaging.sandbox import BuildLimits, BuildSandbox, docker_client_factory
from hearth.store.code import CodeStore
from hearth.store.db import make_engine, make_sessionmaker, migrate
from hearth.store.private import secure_data_dir, secure_sqlite
from hearth.store.shared_files import SharedFiles

log = logging.getLogger("hearth")


def owner_id(data_dir: Path) -> str:
    """Labels this Hearth's sandboxes, so a restart cleans up exactly its own leftovers."""
    return hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]


def build_backends(settings: Settings, owner: str) -> dict[str, Backend]:
    # Sandbox dirs hold Unix sockets, whose paths must stay under 108 bytes: keep them short.
    run_dir = Path(tempfile.gettempdir()) / f"hearth-{owner}"
    overrides = {
        rt: image
        for rt, image in (
            ("python", settings.docker_runtime_python_image),
            ("javascript", settings.docker_runtime_javascript_image),
        )
        if image
    }
    container_options: dict[str, Any] = {
        "owner": owner,
        "pids_limit": settings.pids_limit,
        "tmpfs_mb": settings.tmpfs_mb,
        "max_log_bytes": settings.max_log_bytes,
        "max_result_bytes": settings.max_result_bytes,
        "start_timeout_s": settings.sandbox_start_timeout_s,
        "image_overrides": overrides,
    }
    backends: list[Backend] = [
        DockerBackend(run_dir=run_dir / "docker", **container_options),
        # gVisor: the same containers under dockerd's runsc runtime (docs/isolation.md).
        GVisorBackend(run_dir=run_dir / "gvisor", docker_runtime=settings.gvisor_runtime, **container_options),
        # microVMs: QEMU's microvm machine, KVM where a probe boot works, else TCG (docs/isolation.md).
        MicroVMBackend(
            run_dir=run_dir / "microvm",
            cache_dir=settings.microvm_cache_dir,
            accel=settings.microvm_accel,
            snapshots=settings.microvm_snapshots,
            **{k: v for k, v in container_options.items() if k != "image_overrides"},
        ),
        # Firecracker (KVM only), where its binary is on PATH: the same guest, driven through its API socket.
        firecracker_backend(
            run_dir=run_dir / "firecracker",
            binary=settings.firecracker_binary,
            cache_dir=settings.microvm_cache_dir,
            snapshots=settings.microvm_snapshots,
            **{k: v for k, v in container_options.items() if k != "image_overrides"},
        ),
    ]
    identity = LambdaIdentity(region=settings.lambda_region, account=settings.lambda_account_id)
    for backend in backends:  # stem cells at start for the default backend; for the others at their first use
        backend.stem_cells_at_start = backend.name == settings.default_backend
        backend.identity = identity  # the region and account functions see (AWS_REGION, context's ARN)
    return {backend.name: backend for backend in backends}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    data_dir = settings.resolved_data_dir
    secure_data_dir(data_dir)  # 0700; its key files 0600 (fixed at every start)
    api_key, created = load_or_create_api_key(settings.api_key, data_dir)
    if created:
        print(
            f"Hearth generated an admin API key (saved in {data_dir / 'api_key'}, mode 0600):\n  {api_key}",
            flush=True,
        )
    url = settings.resolved_database_url
    secure_sqlite(url)  # made 0600 before SQLite creates it; -wal/-shm take its mode
    migrate(url)
    db = make_engine(url)
    sessions = make_sessionmaker(db)
    node = owner_id(data_dir)
    code = CodeStore(data_dir / "code", SharedFiles(sessions) if settings.code_shared else None)
    registry = FunctionRegistry()  # filled from the store by the follower's first sync, below
    recorder = InvocationRecorder(
        RecordWriter(url), settings.invocation_flush_interval_s, settings.invocation_flush_batch
    )
    engine = Engine(
        build_backends(settings, node),
        EngineConfig(
            keep_alive_s=settings.keep_alive_s,
            capacity_wait_s=settings.capacity_wait_s,
            stem_cells_per_runtime=settings.stem_cells,
        ),
        record=recorder.add,  # every invocation's record, built by the engine
    )
    docker_backend = engine.backends.get("docker")
    limits = BuildLimits(
        timeout_s=settings.build_timeout_s,
        memory_mb=settings.build_memory_mb,
        cpus=settings.build_cpus,
        pids=settings.build_pids,
        disk_mb=settings.build_disk_mb,
    )
    build_client = docker_client_factory(lambda: docker_backend)
    builder = LayerBuilder(
        code.root / LAYERS_DIR,
        RuntimeVersions(docker_backend),
        BuildSandbox(build_client, limits, node),
        # `make images` builds the default runtimes' builder images; another runtime's at its first build
        lambda runtime: containers.ensure_image(build_client(), runtime, role="builder"),
        read_host_config,
        allow_scripts=settings.build_allow_scripts,
    )
    state = HearthState(
        settings,
        api_key,
        sessions,
        code,
        registry,
        engine,
        recorder,
        builds=BuildService(sessions, code, builder, node),
        keys=KeyRing(api_key, sessions, load_or_create_dashboard_key(data_dir)),
        node=node,
    )
    app.state.hearth = state
    app.state.functions = FunctionService(state)
    await state.builds.recover()
    await asyncio.to_thread(builder.sweep)  # its containers go with the Docker backend's sweep in engine.start
    await engine.start()
    follower = FunctionFollower(state, app.state.functions, settings.sync_interval_s)
    await follower.sync()  # every function, warming min_warm; before the scheduler and its cron ticker
    recorder.start()
    stop_metrics = start_metrics(state)
    stop_scheduler = await start_scheduler(state, node)
    follower.start()
    log.info("Hearth %s ready: %d functions, data in %s", __version__, len(registry.all()), data_dir)
    # What start-up loaded lives as long as the server: out of the collector's sight, the generational
    # collections that requests trigger no longer walk it (no multi-millisecond pauses in the tail).
    gc.freeze()
    try:
        yield
    finally:
        await follower.close()
        await stop_scheduler()
        await stop_metrics()
        await engine.shutdown()
        await recorder.close()
        db.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(
        title="Hearth",
        version=__version__,
        description="A self-hosted serverless platform. Management endpoints live under /api and need "
        "`Authorization: Bearer <key>`; functions are served under /fn/<route>.",
        default_response_class=ORJSONResponse,
        lifespan=lifespan,
    )
    app.state.settings = settings or get_settings()
    install_error_handlers(app)
    app.add_middleware(JsonBodies)
    app.include_router(health.router)
    app.include_router(functions_router.router)
    app.include_router(backends_router.router)
    app.include_router(runtimes_router.router)
    app.include_router(invoke_router.router)
    app.include_router(builds_router.router)
    app.include_router(lambda_router.router)
    app.include_router(metrics_router.api)
    app.include_router(metrics_router.router)
    app.include_router(jobs_router.router)  # before invocations: it serves /api/invocations/job-... (async jobs)
    app.include_router(invocations_router.router)
    app.include_router(users_router.router)
    return app


def create_asgi_app() -> HttpTriggerFastPath:
    """What the server runs: the FastAPI app behind the HTTP trigger's fast path."""
    return HttpTriggerFastPath(create_app())
