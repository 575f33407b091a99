"""The durable queue of async invocations: the abstract queue (base), its implementation on the
store (sql) and the order in which claims visit functions (fairness). The scheduler and the API use
only the names below, and of the queue only `JobQueue`'s methods.
"""

from hearth.scheduler.queue.base import (
    FINAL,
    JOB_ID_PREFIX,
    ClaimedJob,
    JobQuery,
    JobQueue,
    JobRecord,
    NewJob,
    Outcome,
    PendingCallback,
    callback_body,
    new_job_id,
)
from hearth.scheduler.queue.sql import SqlJobQueue

__all__ = [
    "FINAL",
    "JOB_ID_PREFIX",
    "ClaimedJob",
    "JobQuery",
    "JobQueue",
    "JobRecord",
    "NewJob",
    "Outcome",
    "PendingCallback",
    "SqlJobQueue",
    "callback_body",
    "new_job_id",
]
