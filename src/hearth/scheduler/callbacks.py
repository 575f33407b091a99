"""Delivering an async job's outcome to its `callback_url`: a POST, tried a bounded number of times.

Durable: a job's final state and `callback_status: pending` are written together, so a callback the
server could not deliver before it stopped is delivered after the next start (at least once; the
receiver can dedupe on `invocation_id`, also sent as the `X-Hearth-Invocation-Id` header).

Callbacks leave from the Hearth host, so by default they may not target loopback, private,
link-local or reserved addresses (a caller could otherwise reach services inside the host's
network); `HEARTH_CALLBACK_ALLOW_PRIVATE=true` lifts that (tests use loopback). The address is
checked when the job is submitted and again before each delivery; redirects are not followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from typing import Any
from urllib.parse import urlsplit

import httpx

from hearth.scheduler.queue import JobQueue

log = logging.getLogger(__name__)
MAX_URL_CHARS = 2048


def check_callback_url(url: str, allow_private: bool) -> str | None:
    """None if `url` is acceptable, else why not (resolves the host: call it off the event loop)."""
    if len(url) > MAX_URL_CHARS:
        return f"longer than {MAX_URL_CHARS} characters"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http(s) URL with a host"
    if allow_private:
        return None
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 80, proto=socket.IPPROTO_TCP)
    except (OSError, ValueError):
        return f"cannot resolve {parts.hostname!r}"
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if address.is_private or address.is_loopback or address.is_link_local or address.is_reserved:
            return f"{parts.hostname!r} is a private or loopback address (HEARTH_CALLBACK_ALLOW_PRIVATE allows it)"
    return None


def backoff_s(tried: int) -> float:
    """Pause after the `tried`-th failed delivery: 0.5 s, 1 s, 2 s, ... at most 30 s."""
    return min(30.0, 0.5 * 2 ** (tried - 1))


async def deliver_callback(
    client: httpx.AsyncClient,
    queue: JobQueue,
    job_id: str,
    url: str,
    body: dict[str, Any],
    attempts: int,
    allow_private: bool,
) -> str:
    """POST `body` to `url` until a 2xx answer or `attempts` tries; records and returns the outcome."""
    status = "failed"
    tried = 0
    for tried in range(1, attempts + 1):
        problem = await asyncio.to_thread(check_callback_url, url, allow_private)
        if problem:
            status = f"refused: {problem}"
            break
        try:
            response = await client.post(url, json=body, headers={"X-Hearth-Invocation-Id": job_id})
            if response.status_code < 300:
                status = "delivered"
                break
            status = f"failed: HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            status = f"failed: {type(exc).__name__}"
        if tried < attempts:
            await asyncio.sleep(backoff_s(tried))
    try:
        await asyncio.to_thread(queue.set_callback, job_id, status[:64], tried)
    except Exception:
        log.exception("could not record the callback outcome of job %s", job_id)
    return status
