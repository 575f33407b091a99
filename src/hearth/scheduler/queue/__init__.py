"""The durable queue of async invocations; `hearth.scheduler.queue` names its public parts."""

from hearth.scheduler.queue.sql import (
    FINAL,
    JOB_ID_PREFIX,
    ClaimedJob,
    JobQueue,
    NewJob,
    Outcome,
    PendingCallback,
    SqlJobQueue,
    callback_body,
    new_job_id,
)

__all__ = [
    "FINAL",
    "JOB_ID_PREFIX",
    "ClaimedJob",
    "JobQueue",
    "NewJob",
    "Outcome",
    "PendingCallback",
    "SqlJobQueue",
    "callback_body",
    "new_job_id",
]
