"""What the API's handlers share: built once at start by the app's lifespan.

Everything is given at construction except the parts that exist only once started (the metrics
sampler and registry, the scheduler), which their start-up functions set (hearth.api.metrics.lifecycle,
hearth.api.jobs.lifecycle). Lower layers never see this object: each is given the parts it uses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session, sessionmaker

from hearth.api.auth import KeyRing
from hearth.api.builds.service import BuildService
from hearth.api.invocations.stream import LogHub
from hearth.api.rate_limits import RateLimiter
from hearth.config import Settings
from hearth.engine.engine import Engine
from hearth.engine.registry import FunctionRegistry
from hearth.metrics.recorder import InvocationRecorder
from hearth.metrics.sampler import ResourceSampler
from hearth.store.code import CodeStore

if TYPE_CHECKING:
    from hearth.scheduler.worker import Scheduler


@dataclass
class HearthState:
    settings: Settings
    api_key: str
    sessions: sessionmaker[Session]
    code: CodeStore
    registry: FunctionRegistry
    engine: Engine
    recorder: InvocationRecorder
    builds: BuildService
    keys: KeyRing
    node: str  # this node's id (its sandboxes' `hearth.owner` label)
    rates: RateLimiter = field(default_factory=RateLimiter)
    # set once started: metrics (hearth.api.metrics.lifecycle)
    sampler: ResourceSampler | None = None
    prometheus: CollectorRegistry = field(default_factory=CollectorRegistry)
    log_hub: LogHub = field(default_factory=LogHub)
    queue_depth: Callable[[], int] | None = None  # async invocations waiting, once a queue exists
    scheduler: Scheduler | None = None  # the async queue's worker, set by the app's lifespan
