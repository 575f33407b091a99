"""Async invocations (jobs): their state at `GET /api/invocations/{job id}`, the list at `/api/jobs`
(the dead-letter queue is `?dead_letter=true`), and running a dead-lettered job again.

Job ids start with `job-` and have no dot; this router's `/api/invocations/{id}` route matches only
those (a path convertor), so every other id (sync records, and the records of a job's attempts,
`<job id>.<run>`) reaches the invocation records' own route. It is registered before that one.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from starlette.convertors import Convertor, register_url_convertor

from hearth.api.auth import principal_of, require_api_key
from hearth.api.dependencies import State, hearth_state
from hearth.api.errors import ApiError
from hearth.api.namespaces import resolve
from hearth.api.state import HearthState
from hearth.scheduler.queue import JOB_ID_PREFIX, JobQuery, JobQueue, JobRecord

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "timed_out")


class JobIdConvertor(Convertor[str]):
    regex = re.escape(JOB_ID_PREFIX) + r"[0-9A-Za-z_-]{1,36}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("jobid", JobIdConvertor())
router = APIRouter(prefix="/api", tags=["async"], dependencies=[Depends(require_api_key)])


def job_out(job: JobRecord) -> dict[str, Any]:
    return {
        "id": job.id,
        "invocation_id": job.id,
        "function": job.function_name,
        "mode": "async",
        "source": job.source,  # api, http, lambda or cron
        "status": job.status,
        "dead_letter": job.dead_letter,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "interruptions": job.interruptions,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "next_attempt_at": job.run_at if job.status == "queued" else None,
        "result": None if job.result is None else orjson.loads(job.result),
        "error": job.error,
        "idempotency_key": job.idempotency_key,
        "callback_url": job.callback_url,
        "callback_status": job.callback_status,
        "callback_attempts": job.callback_attempts,
        "last_record_id": job.last_record_id,  # the last attempt's invocation record (logs, duration)
    }


def queue_of(state: HearthState) -> JobQueue:
    if state.scheduler is None:
        raise ApiError(503, "Unavailable", "the async queue is not running")
    return state.scheduler.queue


def visible(request: Request, function: str) -> bool:
    """Admins see every job; a user the jobs of the functions they own (deleted functions: admins)."""
    principal = principal_of(request)
    owner = hearth_state(request).registry.owner_of(function)
    return principal.is_admin or (owner is not None and owner == principal.user)


async def load_visible(request: Request, job_id: str) -> JobRecord:
    job = await asyncio.to_thread(queue_of(hearth_state(request)).get, job_id)
    if job is None or not visible(request, job.function_name):
        raise ApiError(404, "NotFound", f"invocation {job_id!r} does not exist")
    return job


@router.get(
    "/invocations/{invocation_id:jobid}",
    summary="One async invocation: status, attempts, result or error, timings",
    responses={404: {"description": "no such job (or not yours)"}},
)
async def get_job(invocation_id: str, request: Request) -> dict[str, Any]:
    return job_out(await load_visible(request, invocation_id))


@router.get("/jobs", summary="Async invocations, newest first (dead_letter=true: the dead-letter queue)")
async def list_jobs(
    state: State,
    request: Request,
    function: str | None = None,
    status: str | None = Query(None, description="queued, running, succeeded, failed or timed_out"),
    dead_letter: bool | None = Query(None, description="true: only jobs that failed their last attempt"),
    limit: int = Query(50, ge=1, le=500),
) -> dict[str, Any]:
    if status is not None and status not in JOB_STATUSES:
        raise ApiError(
            422,
            "ValidationError",
            f"status: must be one of {', '.join(JOB_STATUSES)}",
            fields=[{"field": "status", "message": "unknown status"}],
        )
    queue = queue_of(state)
    principal = principal_of(request)
    owned = (
        None
        if principal.is_admin
        else [spec.name for spec in state.registry.all() if state.registry.owner_of(spec.name) == principal.user]
    )

    query = JobQuery(
        limit=limit,
        function=None if function is None else resolve(principal.user, function),
        functions=owned,
        status=status,
        dead_letter=dead_letter,
    )
    jobs = await asyncio.to_thread(queue.list_jobs, query)
    return {"jobs": [job_out(job) for job in jobs], "queue_depth": await asyncio.to_thread(queue.depth)}


@router.post(
    "/jobs/{job_id}/retry", status_code=202, summary="Run a dead-lettered job again, with a fresh set of attempts"
)
async def retry_job(state: State, job_id: str, request: Request) -> dict[str, Any]:
    job = await load_visible(request, job_id)
    if not await asyncio.to_thread(queue_of(state).requeue_dead, job_id):
        raise ApiError(409, "Conflict", f"job {job_id!r} is {job.status}, not dead-lettered")
    assert state.scheduler is not None
    state.scheduler.notify()
    return job_out(await load_visible(request, job_id))
