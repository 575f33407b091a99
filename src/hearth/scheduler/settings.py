"""The scheduler's settings: the part of Hearth's configuration the async worker reads."""

from __future__ import annotations

from dataclasses import dataclass

from hearth.config import Settings


@dataclass(frozen=True)
class SchedulerSettings:
    max_concurrency: int = 4  # async jobs running at once on this node
    share: float = 0.5  # of a function's instance slots, how many async jobs may hold at a time
    lease_s: float = 30.0  # a dead worker's jobs run again after this
    poll_s: float = 0.2  # how often the queue is looked at when nothing wakes the worker
    retry_base_s: float = 1.0
    retry_max_s: float = 300.0
    default_retries: int = 2
    retention_s: float = 7 * 86400.0
    callback_attempts: int = 5
    callback_allow_private: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> SchedulerSettings:
        return cls(
            max_concurrency=settings.async_max_concurrency,
            share=settings.async_share,
            lease_s=settings.async_lease_s,
            poll_s=settings.async_poll_s,
            retry_base_s=settings.async_retry_base_s,
            retry_max_s=settings.async_retry_max_s,
            default_retries=settings.async_default_retries,
            retention_s=settings.async_retention_s,
            callback_attempts=settings.callback_attempts,
            callback_allow_private=settings.callback_allow_private,
        )
