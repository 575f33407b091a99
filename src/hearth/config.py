"""Hearth's settings, read from `HEARTH_*` environment variables (and a `.env` file if present)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HEARTH_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    dashboard_port: int = 8501
    http_keep_alive_s: float = Field(
        default=75.0, ge=1, le=3600, description="how long the API keeps an idle client connection open"
    )
    # bounds on one HTTP client (src/hearth/api/http_limits.py, docs/security.md); 0 turns one off
    http_max_header_bytes: int = Field(
        default=64 * 1024, ge=0, description="largest request line + headers; over it: 431"
    )
    http_header_timeout_s: float = Field(
        default=10.0, ge=0, description="a request's headers must arrive within this (from connect or first byte)"
    )
    http_body_timeout_s: float = Field(
        default=30.0, ge=0, description="a request body must arrive within this, plus 1 s per http_body_min_rate bytes"
    )
    http_body_min_rate: int = Field(
        default=64 * 1024, ge=1, description="body bytes/s that extend the body timeout (faster uploads are never cut)"
    )
    http_max_connections: int = Field(
        default=1000, ge=0, description="open client connections; one more is answered 503"
    )
    dashboard_host: str = Field(
        default="127.0.0.1", description="where `hearth up` runs the dashboard (it has no login: keep it local)"
    )
    dashboard_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="host names the dashboard answers to (DNS-rebinding defence); default: its address, and "
        "the loopback names when it listens on loopback or everywhere. JSON list, e.g. '[\"hearth.lan\"]'",
    )
    data_dir: Path = Path(".hearth")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite file `hearth.db` in the data dir."
    )
    api_key: str | None = Field(default=None, description="Admin API key; generated on first start if unset.")
    # several nodes on one database (docs/operations.md)
    share_code: bool | None = Field(
        default=None,
        description="keep function code and dependency layers in the database too, so every node can serve "
        "every function; default: on unless the database is the data dir's own SQLite file",
    )
    sync_interval_s: float = Field(
        default=1.0, gt=0, description="how often a node picks up functions deployed, changed or deleted elsewhere"
    )

    default_backend: str = "docker"
    docker_runtime_python_image: str | None = None
    docker_runtime_javascript_image: str | None = None
    gvisor_runtime: str = Field(
        default="runsc", description="dockerd runtime of the gvisor backend (scripts/register-runsc.sh registers it)"
    )
    # microVM backends (docs/isolation.md)
    microvm_cache_dir: Path | None = Field(
        default=None,
        description="guest images and snapshots; default /var/cache/hearth/microvm as root, else ~/.cache/...",
    )
    microvm_accel: Literal["auto", "kvm", "tcg"] = Field(
        default="auto", description="QEMU accelerator: auto = KVM if a probe boot works, else TCG"
    )
    microvm_snapshots: bool = Field(default=True, description="restore microVMs from snapshots instead of booting")
    firecracker_binary: str = Field(default="firecracker", description="the firecracker backend's VMM binary")

    max_code_bytes: int = 1024 * 1024
    max_request_bytes: int = 6 * 1024 * 1024
    max_result_bytes: int = 6 * 1024 * 1024
    max_log_bytes: int = 64 * 1024

    stem_cells: int = Field(default=1, ge=0, le=32, description="pre-started generic sandboxes per runtime")
    keep_alive_s: float = 600.0
    capacity_wait_s: float = 10.0
    sandbox_start_timeout_s: float = 30.0
    tmpfs_mb: int = 64
    pids_limit: int = 128

    max_zip_bytes: int = Field(default=50 * 1024 * 1024, description="largest zip bundle accepted")
    max_unzipped_bytes: int = Field(default=250 * 1024 * 1024, description="largest bundle once unpacked")
    build_timeout_s: float = Field(default=600.0, description="limit of one dependency install (pip / npm)")
    build_allow_scripts: bool = Field(
        default=False, description="let dependency installs run package code in the build sandbox (sdists, npm scripts)"
    )
    build_memory_mb: int = Field(default=2048, ge=128, description="memory limit of a dependency build's container")
    build_cpus: float = Field(default=1.0, gt=0, description="CPU limit of a dependency build's container")
    build_pids: int = Field(default=512, ge=16, description="process limit of a dependency build's container")
    build_disk_mb: int = Field(
        default=1024, ge=16, description="size of a dependency build's scratch tmpfs, which holds its output"
    )
    lambda_account_id: str = Field(default="000000000000", description="account id in the Lambda API's ARNs")
    lambda_region: str = Field(
        default="us-east-1",
        pattern=r"^[a-z]{2}(-[a-z]+)+-\d$",
        description="the region functions run in: AWS_REGION, AWS_DEFAULT_REGION and their ARN in the context",
    )

    invocation_flush_interval_s: float = 0.5
    invocation_flush_batch: int = 500

    # async invocations and schedules (docs/scheduler.md)
    async_max_concurrency: int = Field(default=4, ge=1, le=1000, description="async jobs running at once")
    async_share: float = Field(
        default=0.5, gt=0, le=1, description="share of a function's instance slots async jobs may hold"
    )
    async_lease_s: float = Field(default=30.0, gt=0, description="a dead worker's jobs run again after this")
    async_poll_s: float = Field(default=0.2, gt=0, description="how often the queue is checked when idle")
    async_retry_base_s: float = Field(default=1.0, ge=0, description="first retry after ~this; doubles each time")
    async_retry_max_s: float = Field(default=300.0, ge=0, description="longest wait between retries")
    async_default_retries: int = Field(default=2, ge=0, le=10, description="retries of a function without its own")
    async_shutdown_grace_s: float = Field(default=10.0, ge=0, description="running jobs may finish this long")
    async_retention_s: float = Field(
        default=7 * 24 * 3600.0, gt=0, description="final jobs (and their idempotency keys) are kept this long"
    )
    callback_attempts: int = Field(default=5, ge=1, le=20, description="deliveries tried per callback_url")
    callback_allow_private: bool = Field(
        default=False, description="allow callback_url to non-global addresses (tests, trusted setups)"
    )
    schedule_catchup: Literal["once", "skip"] = Field(
        default="once", description="ticks missed while down: run the latest once, or skip them"
    )
    schedule_tick_s: float = Field(default=1.0, gt=0, description="how often schedules are checked")

    # metrics (docs/metrics.md)
    metrics_sample_interval_s: float = Field(default=5.0, gt=0, description="sandbox/host CPU+memory sampling")
    metrics_raw_retention_s: float = Field(
        default=7 * 86400, gt=0, description="raw invocation records (and their logs) are kept this long"
    )
    metrics_aggregate_retention_s: float = Field(
        default=90 * 86400, gt=0, description="per-minute aggregates are kept this long"
    )
    metrics_sample_rollup_s: float = Field(
        default=86400, gt=0, description="resource samples older than this are rolled into per-minute rows"
    )
    metrics_rollup_interval_s: float = Field(default=60.0, gt=0, description="how often retention runs")
    metrics_exact_percentile_rows: int = Field(
        default=20_000, ge=0, description="windows with at most this many records get exact percentiles"
    )

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_data_dir / 'hearth.db'}"

    @property
    def code_shared(self) -> bool:
        if self.share_code is not None:
            return self.share_code
        return self.database_url is not None and not self.database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    return Settings()
