"""Prometheus exposition: invocation counters and histograms, plus gauges read from the engine at scrape.

Names follow Prometheus conventions and mean what the OpenTelemetry FaaS conventions mean:
invoke duration (`faas.invoke_duration`), init duration (`faas.init_duration`), cold starts
(`faas.coldstarts`), errors (`faas.errors`), timeouts (`faas.timeouts`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from hearth.engine.engine import Engine
    from hearth.metrics.recorder import InvocationRecorder
    from hearth.metrics.sampler import ResourceSampler

DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
ERROR_STATUSES = frozenset({"error", "timeout", "oom", "crashed"})

disable_created_metrics()  # the *_created series only double what Prometheus scrapes


class InvocationMetrics:
    """Counters fed by every invocation record.

    `observe` (the recorder's observer, on every call's path) only keeps the record; the counters take
    the records kept so far when Prometheus scrapes (`catch_up` runs first in every collection, so a
    scrape sees every call recorded before it) and after each written batch (so that they stay few).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._pending: list[dict[str, Any]] = []
        registry.register(_CatchUp(self))  # registered before the counters: a registry collects in order
        # Series looked up once: as bounded as the registry's own, which are never removed either.
        self._calls: dict[tuple[str, str, str], Any] = {}  # (function, status, path) -> its calls counter
        self._durations: dict[str, Any] = {}
        self._cpu: dict[str, Any] = {}
        self.invocations = Counter(
            "hearth_invocations",
            "Invocations by outcome and by the path that served them",
            ["function", "status", "path"],
            registry=registry,
        )
        self.duration = Histogram(
            "hearth_invocation_duration_seconds",
            "Time the handler took (faas.invoke_duration)",
            ["function"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.init_duration = Histogram(
            "hearth_init_duration_seconds",
            "Time a cold or stem start took before the call (faas.init_duration)",
            ["function", "path"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.cold_starts = Counter(
            "hearth_cold_starts",
            "Calls served by a new sandbox (faas.coldstarts)",
            ["function", "path"],
            registry=registry,
        )
        self.errors = Counter(
            "hearth_errors", "Failed calls (faas.errors) by status", ["function", "status"], registry=registry
        )
        self.timeouts = Counter(
            "hearth_timeouts", "Calls stopped by their timeout (faas.timeouts)", ["function"], registry=registry
        )
        self.throttles = Counter(
            "hearth_throttles", "Calls refused for capacity (429)", ["function"], registry=registry
        )
        self.cpu = Counter(
            "hearth_function_cpu_seconds",
            "CPU time the runtimes measured during calls",
            ["function"],
            registry=registry,
        )

    def observe(self, row: dict[str, Any]) -> None:
        self._pending.append(row)

    def catch_up(self, _written: object = None) -> None:
        """Fold the records kept since the last time into the counters (also a recorder listener).

        Counters are added once per series for the whole batch (each add takes the series' lock); every
        duration is observed on its own (a histogram has no bulk add)."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        calls: dict[tuple[str, str, str], int] = {}
        cpu_ms: dict[str, float] = {}
        for row in pending:
            function, status, path = row["function_name"], row["status"], row.get("path") or "none"
            key = (function, status, path)
            calls[key] = calls.get(key, 0) + 1
            if status == "throttled":
                self.throttles.labels(function).inc()
                continue
            duration = self._durations.get(function)
            if duration is None:  # labels() costs a lock and a tuple check per call: look each series up once
                duration = self._durations[function] = self.duration.labels(function)
            duration.observe(row["duration_ms"] / 1000)
            if path in ("cold", "stem"):
                self.cold_starts.labels(function, path).inc()
                if row.get("init_ms") is not None:
                    self.init_duration.labels(function, path).observe(row["init_ms"] / 1000)
            if status in ERROR_STATUSES:
                self.errors.labels(function, status).inc()
            if status == "timeout":
                self.timeouts.labels(function).inc()
            if used := row.get("cpu_ms"):
                cpu_ms[function] = cpu_ms.get(function, 0.0) + used
        for key, count in calls.items():
            counter = self._calls.get(key)
            if counter is None:
                counter = self._calls[key] = self.invocations.labels(*key)
            counter.inc(count)
        for function, used in cpu_ms.items():
            cpu = self._cpu.get(function)
            if cpu is None:
                cpu = self._cpu[function] = self.cpu.labels(function)
            cpu.inc(used / 1000)


class _CatchUp(Collector):
    """Yields no metric: brings the invocation counters up to date before the registry collects them."""

    def __init__(self, metrics: InvocationMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        self.metrics.catch_up()
        return iter(())


class PlatformCollector(Collector):
    """Gauges read at scrape time, so they are never stale."""

    def __init__(
        self,
        engine: Engine,
        recorder: InvocationRecorder,
        sampler: ResourceSampler | None,
        queue_depth: Callable[[], int] | None = None,
    ) -> None:
        self.engine, self.recorder, self.sampler, self.queue_depth = engine, recorder, sampler, queue_depth

    def collect(self) -> Iterator[Any]:
        sandboxes = GaugeMetricFamily(
            "hearth_sandboxes", "Live sandboxes by function and state", labels=["function", "state"]
        )
        snapshot = self.engine.snapshot()
        for name, counts in sorted(snapshot.functions.items()):
            for state, count in counts.as_dict().items():
                sandboxes.add_metric([name, state], count)
        yield sandboxes
        stems = GaugeMetricFamily("hearth_stem_cells", "Ready stem cells", labels=["backend", "runtime"])
        for key, count in snapshot.stem_cells.items():
            backend, runtime = key.split("/", 1)
            stems.add_metric([backend, runtime], count)
        yield stems
        waiting = snapshot.waiting_calls
        yield GaugeMetricFamily("hearth_waiting_calls", "Calls waiting for a free instance", value=waiting)
        queued = self.queue_depth() if self.queue_depth is not None else 0
        yield GaugeMetricFamily("hearth_queue_depth", "Async invocations queued, not yet running", value=queued)
        yield GaugeMetricFamily(
            "hearth_recorder_buffered", "Invocation records not yet written", value=self.recorder.buffered
        )
        yield CounterMetricFamily(
            "hearth_recorder_dropped", "Invocation records given up (database refused)", value=self.recorder.dropped
        )
        if self.sampler is None:
            return
        memory = GaugeMetricFamily(
            "hearth_function_memory_bytes", "Memory of a function's sandboxes (cgroup)", labels=["function"]
        )
        cpu = GaugeMetricFamily(
            "hearth_function_cpu_percent", "CPU of a function's sandboxes, % of one core", labels=["function"]
        )
        for name, sample in sorted(self.sampler.latest.items()):
            if name:
                memory.add_metric([name], sample["memory_bytes"])
                cpu.add_metric([name], sample["cpu_percent"])
        yield memory
        yield cpu
        host = self.sampler.latest.get("")
        if host is not None:
            yield GaugeMetricFamily(
                "hearth_host_cpu_percent", "Host CPU use, % of all cores", value=host["cpu_percent"]
            )
            yield GaugeMetricFamily("hearth_host_memory_bytes", "Host memory in use", value=host["memory_bytes"])


def build_registry(
    engine: Engine,
    recorder: InvocationRecorder,
    sampler: ResourceSampler | None,
    queue_depth: Callable[[], int] | None = None,
) -> tuple[CollectorRegistry, InvocationMetrics]:
    registry = CollectorRegistry()
    metrics = InvocationMetrics(registry)
    registry.register(PlatformCollector(engine, recorder, sampler, queue_depth))
    return registry, metrics
