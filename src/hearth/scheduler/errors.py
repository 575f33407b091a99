"""What the scheduler refuses, in its own terms; the API maps these to HTTP (hearth.api.errors)."""

from __future__ import annotations


class SchedulerError(Exception):
    """A job the scheduler will not take."""


class FunctionNotFound(SchedulerError):
    def __init__(self, name: str) -> None:
        super().__init__(f"function {name!r} does not exist")
        self.name = name


class InvalidJob(SchedulerError):
    """One of the job's fields is not acceptable (`field`: the name the caller used)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem
