"""The form's values as the API wants them: request bodies for create (POST) and save (PATCH), and the
API's validation errors sorted to the form's fields. Pure: no Streamlit, no API calls."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_RUNTIME = "default"  # the runtime choice that means "the language's default"
FIELDS = (
    "name",
    "description",
    "language",
    "runtime",
    "code",
    "handler",
    "route",
    "timeout_s",
    "memory_mb",
    "cpus",
    "env",
    "backend",
    "min_warm",
    "max_instances",
    "concurrency",
    "auth",
    "network",
    "batch",
    "retries",
    "schedule",
    "http_payload_format",
)
GENERAL = "_general"  # errors of no one field


@dataclass(frozen=True)
class FormValues:
    """What the form holds, as typed (names and routes not yet stripped)."""

    name: str
    language: str
    code: str
    description: str = ""
    runtime: str = DEFAULT_RUNTIME
    handler: str = "handler"
    route: str = ""
    timeout_s: float = 30.0
    memory_mb: int = 128
    cpus: float = 0.5
    env: tuple[tuple[str, str], ...] = ()  # the variable rows: (name, value), blank names ignored
    backend: str = ""
    min_warm: int = 0
    max_instances: int = 10
    concurrency: int = 1
    auth: str = "public"
    network: bool = False
    batch_on: bool = False
    batch_size: int = 8
    batch_wait_ms: float = 5.0
    batch_handler: bool = False
    retries: int | None = None
    schedule: str = ""  # cron expressions, one per line
    http_payload_format: str = "2.0"


@dataclass(frozen=True)
class Loaded:
    """The version being edited, as the API gave it."""

    function: Mapping[str, Any] = field(default_factory=dict)
    code: str | None = None  # None: a zip bundle, whose code the form does not hold
    language: str = ""


def env_value(rows: Iterable[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for key, value in rows:
        if key.strip():
            env[key.strip()] = value
    return env


def settings_body(form: FormValues, fields: Iterable[str]) -> dict[str, Any]:
    """Every setting the form holds; optional fields only where this API has them (`fields`)."""
    fields = set(fields)
    name = form.name.strip()
    body: dict[str, Any] = {
        "language": form.language,
        "description": form.description,
        "handler": form.handler.strip() or "handler",
        "route": form.route.strip() or f"/{name}",
        "timeout_s": form.timeout_s,
        "memory_mb": form.memory_mb,
        "cpus": form.cpus,
        "env": env_value(form.env),
        "backend": form.backend,
        "min_warm": form.min_warm,
        "max_instances": form.max_instances,
        "concurrency": form.concurrency,
        "auth": form.auth,
        "network": form.network,
        "batch": {"max_size": form.batch_size, "max_wait_ms": form.batch_wait_ms, "batch_handler": form.batch_handler}
        if form.batch_on
        else None,
    }
    if "runtime" in fields:
        body["runtime"] = None if form.runtime == DEFAULT_RUNTIME else form.runtime
    if "retries" in fields:
        body["retries"] = form.retries
    if "http_payload_format" in fields:
        body["http_payload_format"] = form.http_payload_format
    if "schedule" in fields:
        lines = [line.strip() for line in form.schedule.splitlines() if line.strip()]
        body["schedule"] = lines or None
    return body


def create_body(form: FormValues, fields: Iterable[str]) -> dict[str, Any]:
    """POST /api/functions: the name, the code and every setting that is set (None leaves the API's default)."""
    body = {**settings_body(form, fields), "name": form.name.strip(), "code": form.code}
    return {k: v for k, v in body.items() if v is not None}


def patch_body(form: FormValues, fields: Iterable[str], loaded: Loaded) -> dict[str, Any]:
    """PATCH /api/functions/{name}: only what differs from the loaded version (empty: nothing changed).

    Only what changed: an unrelated edit must not trip over, say, a backend that became unavailable.
    The code is sent when it was edited or the language changed (a bundle's empty code is never sent).
    """
    body = settings_body(form, fields)
    if form.code.strip() and (form.code != loaded.code or form.language != loaded.language):
        body["code"] = form.code
    return {k: v for k, v in body.items() if k == "code" or k not in loaded.function or loaded.function[k] != v}


def errors_by_field(fields: Mapping[str, str], message: str) -> dict[str, str]:
    """A 422's per-field messages by the form field they belong to (`batch.max_size` -> `batch`);
    those of no form field, or the message when none is given, under GENERAL."""
    out: dict[str, str] = {}
    for name, text in fields.items():
        head = name.split(".")[0]
        head = head if head in FIELDS else GENERAL
        out[head] = f"{out[head]}; {text}" if head in out else (text if head != GENERAL else f"{name}: {text}")
    if not out:
        out[GENERAL] = message
    return out
