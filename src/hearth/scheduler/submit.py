"""Submitting async invocations: validate, store durably, wake the scheduler. Shared by every entry
point (the API's invoke with ?mode=async, the HTTP trigger's async header, Lambda Event calls,
through hearth.api.jobs.submit, which maps the refusals to HTTP)."""

from __future__ import annotations

from typing import Any

from hearth.scheduler.callbacks import check_callback_url
from hearth.scheduler.errors import FunctionNotFound, InvalidJob
from hearth.scheduler.queue import NewJob
from hearth.scheduler.worker import Scheduler

MAX_IDEMPOTENCY_KEY = 255
# Request headers an HTTP-trigger event keeps out of the store: the caller's key, and Hearth's own.
UNSTORED_HEADERS = ("authorization", "cookie", "x-hearth-")


def max_attempts(retries: int | None, default_retries: int) -> int:
    return (default_retries if retries is None else int(retries)) + 1


async def submit(
    scheduler: Scheduler,
    name: str,
    event: Any,
    *,
    source: str,
    idempotency_key: str | None = None,
    callback_url: str | None = None,
) -> tuple[str, bool]:
    """(invocation id, created). Returns once the job is committed to the store; raises
    FunctionNotFound or InvalidJob (hearth.scheduler.errors) for a job it does not take."""
    spec = scheduler.registry.get(name)
    if spec is None:
        raise FunctionNotFound(name)
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
        raise InvalidJob("idempotency_key", f"must be 1-{MAX_IDEMPOTENCY_KEY} characters")
    if callback_url is not None:
        problem = await check_callback_url(callback_url, scheduler.settings.callback_allow_private)
        if problem:
            raise InvalidJob("callback_url", problem)
    job = NewJob(
        function_name=name,
        event=event,
        max_attempts=max_attempts(spec.retries, scheduler.settings.default_retries),
        source=source,
        idempotency_key=idempotency_key,
        callback_url=callback_url,
    )
    job_id, created = await scheduler.enqueue(job)  # committed (with others arriving meanwhile)
    if created:
        scheduler.notify(function=name)
    return job_id, created


def accepted_body(job_id: str, created: bool) -> dict[str, Any]:
    """The 202's body. A repeated idempotency key gives the first job (duplicate: true), whatever its
    state now: the status URL tells."""
    body: dict[str, Any] = {"invocation_id": job_id, "status_url": f"/api/invocations/{job_id}"}
    if created:
        body["status"] = "queued"
    body["duplicate"] = not created
    return body


def without_credentials(event: dict[str, Any]) -> dict[str, Any]:
    """An HTTP-trigger event as the queue stores it: without the caller's credentials (Authorization,
    cookies) and Hearth's own X-Hearth-* headers, which would otherwise rest in the database."""
    stored = {key: value for key, value in event.items() if key != "cookies"}
    for field in ("headers", "multiValueHeaders"):
        headers = event.get(field)
        if isinstance(headers, dict):
            stored[field] = {k: v for k, v in headers.items() if not k.lower().startswith(UNSTORED_HEADERS)}
    return stored
