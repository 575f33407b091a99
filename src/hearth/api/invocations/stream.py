"""Live log lines for Server-Sent Events: the recorder announces each written batch, subscribers filter."""

from __future__ import annotations

import asyncio
from typing import Any

from hearth.metrics.queries import lines_of

QUEUE_LINES = 2000


class LogHub:
    """Fan-out of new log lines to `logs/stream` subscribers, per function; slow readers lose lines."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}
        self.closed = asyncio.Event()

    def subscribe(self, function: str) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_LINES)
        self._subscribers.setdefault(function, set()).add(queue)
        return queue

    def unsubscribe(self, function: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        queues = self._subscribers.get(function)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self._subscribers[function]

    def publish(self, rows: list[dict[str, Any]]) -> None:
        """The recorder's listener: runs on the event loop after a batch of records is written."""
        if not self._subscribers:
            return
        for row in rows:
            queues = self._subscribers.get(row["function_name"])
            if not queues:
                continue
            lines = lines_of(
                row["id"],
                row["started_at"],
                row.get("stdout") or "",
                row.get("stderr") or "",
                bool(row.get("logs_truncated")),
            )
            for queue in queues:
                for line in lines:
                    if queue.full():  # drop the oldest: a stalled reader must not hold memory
                        queue.get_nowait()
                    queue.put_nowait(line)
