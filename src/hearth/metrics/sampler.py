"""Resource samples: every few seconds, each live sandbox's CPU and memory from its cgroup, and the host's.

Reading a sandbox's three cgroup files costs ~0.05-0.2 ms; Docker's stats API costs ~1 s per
container (it waits for two readings), so the cgroup it is (docs/metrics.md). Samples are summed per
function and written as one row per function per tick (function '' is the host).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from hearth.periodic import Periodic
from hearth.store.models import ResourceSample

if TYPE_CHECKING:
    from hearth.engine.engine import Engine
    from hearth.engine.sandbox import Sandbox

log = logging.getLogger(__name__)
HOST = ""  # the function_name of host rows
STEM = "(stem cells)"  # memory of stem cells, which belong to no function yet


@dataclass
class HostReading:
    busy_ticks: int
    total_ticks: int
    memory_used: int
    memory_total: int


def read_host() -> HostReading | None:
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
        meminfo: dict[str, int] = {}
        with open("/proc/meminfo") as info:
            for line in info:
                key, value = line.split(":", 1)
                meminfo[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user/nice
    return HostReading(total - idle, total, meminfo["MemTotal"] - meminfo.get("MemAvailable", 0), meminfo["MemTotal"])


class ResourceSampler(Periodic):
    what = "resource sampling"

    def __init__(
        self, engine: Engine, sessions: sessionmaker[Session], interval_s: float = 5.0, node: str | None = None
    ) -> None:
        self.node = node  # labels this node's rows: several nodes may write to one database
        self._engine = engine
        self._sessions = sessions
        self.interval_s = interval_s
        self._cpu_seen: dict[str, tuple[float, float]] = {}  # sandbox id -> (cpu seconds, monotonic time)
        self._host_seen: HostReading | None = None
        self.latest: dict[str, dict[str, Any]] = {}  # function ('' = host) -> its latest sample row

    async def tick(self) -> None:
        await self.sample_once()

    def pause_s(self) -> float:
        return self.interval_s

    def live_sandboxes(self) -> list[tuple[str, Sandbox]]:
        return [(function or STEM, sandbox) for function, sandbox in self._engine.live_sandboxes()]

    async def sample_once(self) -> list[dict[str, Any]]:
        sandboxes = self.live_sandboxes()  # taken on the loop; the file reads happen in a thread
        rows = await asyncio.to_thread(self._measure, sandboxes, time.time(), time.monotonic())
        if rows:
            await asyncio.to_thread(self._write, rows)
        self.latest = {row["function_name"]: row for row in rows}
        return rows

    def _measure(self, sandboxes: list[tuple[str, Sandbox]], now: float, mono: float) -> list[dict[str, Any]]:
        per_function: dict[str, dict[str, Any]] = {}
        seen: dict[str, tuple[float, float]] = {}
        for function, sandbox in sandboxes:
            stats = sandbox.stats()
            if stats is None:
                continue
            row = per_function.setdefault(function, self._row(now, function))
            row["sandboxes"] += 1
            row["memory_bytes"] += stats.memory_bytes
            row["memory_peak_bytes"] = max(row["memory_peak_bytes"], stats.memory_peak_bytes or stats.memory_bytes)
            before = self._cpu_seen.get(sandbox.id)
            if before is not None and mono > before[1]:
                row["cpu_percent"] += max(0.0, stats.cpu_seconds - before[0]) / (mono - before[1]) * 100
            seen[sandbox.id] = (stats.cpu_seconds, mono)
        self._cpu_seen = seen  # sandboxes gone since the last tick are forgotten
        host = read_host()
        if host is not None:
            row = self._row(now, HOST)
            row["sandboxes"] = len(sandboxes)
            row["memory_bytes"], row["memory_total_bytes"] = host.memory_used, host.memory_total
            row["memory_peak_bytes"] = host.memory_used
            previous, self._host_seen = self._host_seen, host
            if previous is not None and host.total_ticks > previous.total_ticks:
                share = (host.busy_ticks - previous.busy_ticks) / (host.total_ticks - previous.total_ticks)
                row["cpu_percent"] = round(share * 100, 2)
            row["cpus"] = os.cpu_count() or 1
            per_function[HOST] = row
        for row in per_function.values():
            row["cpu_percent"] = round(row["cpu_percent"], 2)
        return list(per_function.values())

    def _row(self, now: float, function: str) -> dict[str, Any]:
        return {
            "ts": now,
            "step_s": self.interval_s,
            "function_name": function,
            "sandboxes": 0,
            "cpu_percent": 0.0,
            "memory_bytes": 0,
            "memory_peak_bytes": 0,
            "memory_total_bytes": None,
            "node": self.node,
        }

    def _write(self, rows: list[dict[str, Any]]) -> None:
        columns = {c.key for c in ResourceSample.__table__.columns} - {"id"}
        with self._sessions.begin() as session:
            session.execute(insert(ResourceSample), [{k: v for k, v in r.items() if k in columns} for r in rows])
