"""SQLAlchemy models: functions, their immutable versions, and invocation records."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Function(Base):
    """A deployed function. `name` is its key: `<owner>.<name>` unless the admin owns it (api.namespaces)."""

    __tablename__ = "functions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(127), unique=True)
    route: Mapped[str] = mapped_column(String(255), unique=True)
    current_version: Mapped[int] = mapped_column(Integer)
    owner: Mapped[str] = mapped_column(String(63), default="admin", server_default="admin", index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    versions: Mapped[list[FunctionVersion]] = relationship(
        back_populates="function", cascade="all, delete-orphan", order_by="FunctionVersion.version"
    )


class FunctionVersion(Base):
    """One immutable version of a function: its code and every setting it was deployed with."""

    __tablename__ = "function_versions"
    __table_args__ = (UniqueConstraint("function_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    function_id: Mapped[int] = mapped_column(ForeignKey("functions.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    route: Mapped[str] = mapped_column(String(255))
    language: Mapped[str] = mapped_column(String(16))
    handler: Mapped[str] = mapped_column(String(255))
    code_path: Mapped[str] = mapped_column(String(512))
    code_sha256: Mapped[str] = mapped_column(String(64))
    code_size: Mapped[int] = mapped_column(Integer)
    timeout_s: Mapped[float] = mapped_column(Float)
    memory_mb: Mapped[int] = mapped_column(Integer)
    cpus: Mapped[float] = mapped_column(Float)
    env: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    backend: Mapped[str] = mapped_column(String(32))
    min_warm: Mapped[int] = mapped_column(Integer)
    max_instances: Mapped[int] = mapped_column(Integer)
    concurrency: Mapped[int] = mapped_column(Integer)
    auth: Mapped[str] = mapped_column(String(16), default="public")
    network: Mapped[bool] = mapped_column(Boolean, default=False)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    function: Mapped[Function] = relationship(back_populates="versions")


class Invocation(Base):
    """One invocation of a function, written off the request path by the write-behind recorder."""

    __tablename__ = "invocations"
    __table_args__ = (
        Index("ix_invocations_function_started", "function_name", "started_at"),
        Index("ix_invocations_started", "started_at"),
        Index("ix_invocations_status_started", "status", "started_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    function_name: Mapped[str] = mapped_column(String(127))
    version: Mapped[int] = mapped_column(Integer)
    mode: Mapped[str] = mapped_column(String(8))
    started_at: Mapped[float] = mapped_column(Float)
    duration_ms: Mapped[float] = mapped_column(Float)
    queue_ms: Mapped[float] = mapped_column(Float, default=0.0)
    status: Mapped[str] = mapped_column(String(12))
    path: Mapped[str | None] = mapped_column(String(8), nullable=True)
    backend: Mapped[str] = mapped_column(String(32))
    sandbox_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_type: Mapped[str | None] = mapped_column(String(128), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    stdout: Mapped[str] = mapped_column(Text, default="")
    stderr: Mapped[str] = mapped_column(Text, default="")
    logs_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    request_bytes: Mapped[int] = mapped_column(Integer, default=0)
    response_bytes: Mapped[int] = mapped_column(Integer, default=0)
    init_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    cpu_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    memory_peak_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class InvocationRollup(Base):
    """Aggregate of one function's invocations over a minute or an hour (`width_s`), kept long after the
    raw records are gone.

    `histogram` is the dense count of log-spaced duration buckets (hearth.metrics.histogram), so
    percentiles over any set of rollups can be computed by merging.
    """

    __tablename__ = "invocation_rollups"
    __table_args__ = (Index("ix_invocation_rollups_width_start", "width_s", "start"),)

    function_name: Mapped[str] = mapped_column(String(127), primary_key=True)
    width_s: Mapped[int] = mapped_column(Integer, primary_key=True)  # 60 or 3600
    start: Mapped[int] = mapped_column(Integer, primary_key=True)  # unix seconds, a multiple of width_s
    count: Mapped[int] = mapped_column(Integer, default=0)  # every status but throttled
    errors: Mapped[int] = mapped_column(Integer, default=0)  # error, timeout, oom, crashed
    timeouts: Mapped[int] = mapped_column(Integer, default=0)
    throttles: Mapped[int] = mapped_column(Integer, default=0)
    cold_starts: Mapped[int] = mapped_column(Integer, default=0)  # path cold or stem
    duration_sum_ms: Mapped[float] = mapped_column(Float, default=0.0)
    duration_max_ms: Mapped[float] = mapped_column(Float, default=0.0)
    init_sum_ms: Mapped[float] = mapped_column(Float, default=0.0)
    cpu_sum_ms: Mapped[float] = mapped_column(Float, default=0.0)
    memory_peak_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    histogram: Mapped[list[int]] = mapped_column(JSON, default=list)  # [first bucket, counts...]


class ResourceSample(Base):
    """CPU and memory of one function's live sandboxes on one node (or of that node's host, function_name
    ''), at one time. Figures over several nodes add the nodes' up (hearth.metrics.queries).

    Raw rows cover `step_s` seconds (the sampling interval); old ones are rolled into 60 s rows.
    """

    __tablename__ = "resource_samples"
    __table_args__ = (
        Index("ix_resource_samples_function_ts", "function_name", "ts"),
        Index("ix_resource_samples_ts", "ts"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ts: Mapped[float] = mapped_column(Float)
    step_s: Mapped[float] = mapped_column(Float)
    function_name: Mapped[str] = mapped_column(String(127))
    sandboxes: Mapped[int] = mapped_column(Integer, default=0)
    cpu_percent: Mapped[float] = mapped_column(Float, default=0.0)  # of one core, summed over sandboxes
    memory_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    memory_peak_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    memory_total_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # host rows
    node: Mapped[str | None] = mapped_column(String(64), nullable=True)  # which node sampled; None: before 0010


class Build(Base):
    """One dependency build of a deploy: installing requirements.txt / package.json into a layer."""

    __tablename__ = "builds"
    __table_args__ = (Index("ix_builds_function_created", "function_name", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    function_name: Mapped[str] = mapped_column(String(127))
    language: Mapped[str] = mapped_column(String(16))
    manifest: Mapped[str] = mapped_column(String(64))
    layer_sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(12))
    cached: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    log: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    layer_bytes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    layer_files: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    duration_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    node: Mapped[str | None] = mapped_column(String(64), nullable=True)  # who ran it; None: before 0009


class User(Base):
    """Someone who owns functions. `admin` is implicit: the key from HEARTH_API_KEY / the data dir."""

    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    max_functions: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: no limit
    max_sandboxes: Mapped[int | None] = mapped_column(Integer, nullable=True)  # sum of max_instances
    max_memory_mb: Mapped[int | None] = mapped_column(Integer, nullable=True)  # sum of memory_mb x max_instances
    max_requests_per_s: Mapped[float | None] = mapped_column(Float, nullable=True)  # per node
    # capabilities the admin grants (hearth.api.functions.capabilities)
    allow_network: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    """An API key: only its SHA-256 is stored; the key itself is shown once, when it is made."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(24), primary_key=True)  # also the key's visible prefix
    user_name: Mapped[str] = mapped_column(ForeignKey("users.name", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(63), default="")
    sha256: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Job(Base):
    """An async invocation: durable from the moment its 202 is sent until it reaches a final state.

    status: queued -> running -> succeeded | failed | timed_out (final), or back to queued for a retry
    (run_at in the future) or after a lease expired. `dead_letter` marks a job that failed its last
    attempt.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_claim", "status", "function_name", "run_at"),
        Index("ix_jobs_function_created", "function_name", "created_at"),
        Index("ix_jobs_callback", "callback_status"),
        UniqueConstraint("function_name", "idempotency_key", name="uq_jobs_idempotency"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # also the invocation id clients see
    function_name: Mapped[str] = mapped_column(String(127))
    source: Mapped[str] = mapped_column(String(16), default="api")  # api, http, lambda, cron
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    event: Mapped[str] = mapped_column(Text)  # JSON
    status: Mapped[str] = mapped_column(String(12), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # attempts that ran (or are running)
    runs: Mapped[int] = mapped_column(Integer, default=0)  # claims, never decremented: names attempt records
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    interruptions: Mapped[int] = mapped_column(Integer, default=0)  # attempts cut short by a crash
    run_at: Mapped[float] = mapped_column(Float)
    lease_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    result: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    last_record_id: Mapped[str | None] = mapped_column(String(48), nullable=True)
    dead_letter: Mapped[bool] = mapped_column(Boolean, default=False)
    callback_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    callback_status: Mapped[str | None] = mapped_column(String(64), nullable=True)  # pending, delivered, failed: ...
    callback_attempts: Mapped[int] = mapped_column(Integer, default=0)


class ScheduleTick(Base):
    """The last tick enqueued for one cron expression of one function: ticks are enqueued once."""

    __tablename__ = "schedule_ticks"

    function_name: Mapped[str] = mapped_column(String(127), primary_key=True)
    expression: Mapped[str] = mapped_column(String(128), primary_key=True)
    last_tick: Mapped[float] = mapped_column(Float)


class Blob(Base):
    """Files several nodes need, as a tar.gz: `code/<sha256>` (a version's code) or `layer/<key>`
    (a dependency layer). Written once, never changed; see hearth.store.shared_files."""

    __tablename__ = "blobs"

    id: Mapped[str] = mapped_column(String(96), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)  # of `data`
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
