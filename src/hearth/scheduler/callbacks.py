"""Delivering an async job's outcome to its `callback_url`: a POST, tried a bounded number of times.

Durable: a job's final state and `callback_status: pending` are written together, so a callback the
server could not deliver before it stopped is delivered after the next start (at least once; the
receiver can dedupe on `invocation_id`, also sent as the `X-Hearth-Invocation-Id` header).

Callbacks leave from the Hearth host, so by default they may only reach globally routable addresses
(a caller could otherwise reach services inside the host's network: loopback, private ranges, link-local
cloud metadata, carrier-grade NAT, or those hidden in IPv6 forms; see `callback_addresses`);
`HEARTH_CALLBACK_ALLOW_PRIVATE=true` lifts that (tests use loopback). The URL is checked when the job is
submitted (a clear 422 early); what holds is the check of each connection (`callback_transport`), which
connects to the very addresses it checked. Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from hearth.scheduler.callback_transport import CallbackRefused, Resolver, checked_addresses, system_resolver
from hearth.scheduler.queue import JobQueue

log = logging.getLogger(__name__)
MAX_URL_CHARS = 2048


def url_problem(url: str) -> str | None:
    """None if `url` has the form of a callback URL, else why not (no resolution)."""
    if len(url) > MAX_URL_CHARS:
        return f"longer than {MAX_URL_CHARS} characters"
    try:
        httpx.URL(url)  # what the client will parse
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except (ValueError, httpx.InvalidURL):
        return "not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http(s) URL with a host"
    return None


async def check_callback_url(url: str, allow_private: bool, resolve: Resolver = system_resolver) -> str | None:
    """None if `url` is acceptable now, else why not (the host is resolved and its addresses checked)."""
    problem = url_problem(url)
    if problem or allow_private:
        return problem
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        await checked_addresses(parts.hostname or "", port, resolve, allow_private)
    except CallbackRefused as exc:
        return str(exc)
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
) -> str:
    """POST `body` to `url` until a 2xx answer or `attempts` tries; records and returns the outcome.
    `client` is a `callback_client`: it enforces the address policy on each connection."""
    status = "failed"
    tried = 0
    for tried in range(1, attempts + 1):
        problem = url_problem(url)
        if problem:
            status = f"refused: {problem}"
            break
        try:
            # orjson: the result may be an orjson.Fragment (the agent's encoding, passed through).
            headers = {"X-Hearth-Invocation-Id": job_id, "Content-Type": "application/json"}
            response = await client.post(url, content=orjson.dumps(body), headers=headers)
            if response.status_code < 300:
                status = "delivered"
                break
            status = f"failed: HTTP {response.status_code}"
        except CallbackRefused as exc:  # the client resolves, checks and connects (pinned) in one go
            status = f"refused: {exc}"
            break
        except httpx.HTTPError as exc:
            status = f"failed: {type(exc).__name__}"
        if tried < attempts:
            await asyncio.sleep(backoff_s(tried))
    try:
        await asyncio.to_thread(queue.set_callback, job_id, status[:64], tried)
    except Exception:
        log.exception("could not record the callback outcome of job %s", job_id)
    return status
