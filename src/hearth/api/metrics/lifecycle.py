"""Starts the metrics collector's parts for the API process and returns how to stop them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from hearth.api.state import HearthState
from hearth.metrics.prometheus import build_registry
from hearth.metrics.retention import RetentionPolicy, RetentionTask
from hearth.metrics.sampler import ResourceSampler


def start_metrics(state: HearthState) -> Callable[[], Awaitable[None]]:
    settings = state.settings
    sampler = ResourceSampler(state.engine, state.sessions, settings.metrics_sample_interval_s, state.node)
    state.sampler = sampler
    state.prometheus, invocation_metrics = build_registry(
        state.engine, state.recorder, sampler, lambda: state.queue_depth() if state.queue_depth else 0
    )
    state.recorder.observers.append(invocation_metrics.observe)
    state.recorder.listeners.append(invocation_metrics.catch_up)
    state.recorder.listeners.append(state.log_hub.publish)
    retention = RetentionTask(
        state.sessions,
        RetentionPolicy(
            raw_s=settings.metrics_raw_retention_s,
            aggregate_s=settings.metrics_aggregate_retention_s,
            sample_rollup_s=settings.metrics_sample_rollup_s,
        ),
        settings.metrics_rollup_interval_s,
    )
    sampler.start()
    retention.start()

    async def stop() -> None:
        state.log_hub.closed.set()
        await sampler.close()
        await retention.close()

    return stop
