"""Request and response bodies of the function management API."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from hearth.images.catalog import ALIASES, PROVIDED

NAME_PATTERN = r"^[a-z0-9-]{1,63}$"
HANDLER_PATTERN = r"^(?:[A-Za-z0-9_\-]+(?:/[A-Za-z0-9_\-]+)*\.)?[A-Za-z_$][A-Za-z0-9_$]*$"
ROUTE_PATTERN = re.compile(r"^/[A-Za-z0-9._~\-/]*$")
ENV_KEY_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_ENV_KEYS = 128
MAX_ENV_BYTES = 32 * 1024
RESERVED_ENV_PREFIXES = ("HEARTH_",)

Language = Literal["python", "javascript", "provided"]
IMAGE_PATTERN = r"^[a-z0-9][a-z0-9._/:@-]*$"
# The event the HTTP trigger delivers: AWS's payload format 2.0 (function URLs, HTTP APIs) or 1.0 (API
# Gateway's proxy event); hearth.api.invoke.events.
HttpPayloadFormat = Literal["2.0", "1.0"]


def language_of_runtime(runtime: str) -> str | None:
    """`python` for python3.x runtimes, `javascript` for nodejsNN.x ones (which exist is checked later);
    `provided` for provided, provided.al2023 and provided.al2."""
    if runtime == PROVIDED or runtime in ALIASES:
        return ALIASES.get(runtime, runtime)
    if re.fullmatch(r"python3(\.\d+)?", runtime):
        return "python"
    if re.fullmatch(r"nodejs\d+(\.x)?", runtime):
        return "javascript"
    return None


def check_cron(expression: str) -> str:
    from croniter import croniter

    expression = " ".join(expression.split())
    if not croniter.is_valid(expression) or len(expression.split()) not in (5, 6):
        raise ValueError(f"{expression!r} is not a cron expression (5 fields, or 6 with seconds last)")
    return expression


Schedule = Annotated[list[Annotated[str, Field(max_length=128), AfterValidator(check_cron)]], Field(max_length=16)]
Name = Annotated[str, Field(pattern=NAME_PATTERN, description="lowercase letters, digits and '-', 1-63 chars")]


def normalize_route(route: str) -> str:
    if not ROUTE_PATTERN.match(route):
        raise ValueError("must start with '/' and contain only letters, digits and . _ ~ - /")
    if any(part in (".", "..") for part in route.split("/")):
        raise ValueError("must not contain '.' or '..' segments")
    if len(route) > 255:
        raise ValueError("must be at most 255 characters")
    route = re.sub(r"/{2,}", "/", route)
    return route.rstrip("/") or "/"


def check_env(env: dict[str, str]) -> dict[str, str]:
    if len(env) > MAX_ENV_KEYS:
        raise ValueError(f"at most {MAX_ENV_KEYS} variables")
    size = 0
    for key, value in env.items():
        if not ENV_KEY_PATTERN.match(key):
            raise ValueError(f"{key!r} is not a valid variable name (letters, digits, '_'; not starting with a digit)")
        if key.startswith(RESERVED_ENV_PREFIXES):
            raise ValueError(f"{key!r}: names starting with HEARTH_ are reserved")
        if "\0" in value:
            raise ValueError(f"{key!r}: value contains a NUL byte")
        size += len(key.encode()) + len(value.encode())
    if size > MAX_ENV_BYTES:
        raise ValueError(f"variables total more than {MAX_ENV_BYTES} bytes")
    return env


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BatchSettings(_Strict):
    """Group pending invocations into one round trip to one instance."""

    max_size: int = Field(ge=1, le=1000, description="most invocations in one batch")
    max_wait_ms: float = Field(default=5.0, ge=0, le=10_000, description="longest a batch waits to fill")
    batch_handler: bool = Field(default=False, description="call the handler once with the list of events")


class FunctionSettings(_Strict):
    """Every setting of a function except its name; the body of a full replace (PUT)."""

    language: Language
    runtime: str | None = Field(
        default=None,
        max_length=32,
        description="python3.11, python3.13, nodejs18.x, nodejs20.x, provided (GET /api/runtimes); "
        "default: the language's",
    )
    code: str | None = Field(default=None, min_length=1, description="source text of one file (or zip_base64)")
    zip_base64: str | None = Field(
        default=None, min_length=1, description="a zip bundle, base64: several files, requirements.txt / package.json"
    )
    description: str = Field(default="", max_length=1024)
    handler: str = Field(default="handler", pattern=HANDLER_PATTERN, max_length=255)
    route: str | None = Field(default=None, description="HTTP trigger path under /fn; default /<name>")
    timeout_s: float = Field(default=30.0, ge=0.1, le=900)
    memory_mb: int = Field(default=128, ge=32, le=4096)
    cpus: float = Field(default=0.5, ge=0.05, le=8)
    env: dict[str, str] = Field(default_factory=dict)
    backend: str | None = Field(default=None, max_length=32, description="isolation backend; default from config")
    min_warm: int = Field(default=0, ge=0, le=100)
    max_instances: int = Field(default=10, ge=1, le=1000)
    concurrency: int = Field(default=1, ge=1, le=1000, description="concurrent invocations per instance")
    auth: Literal["public", "key"] = Field(default="public", description="HTTP trigger needs the API key if 'key'")
    network: bool = Field(default=False, description="give the sandbox a network interface")
    batch: BatchSettings | None = Field(default=None, description="request batching; off when absent")
    retries: int | None = Field(default=None, ge=0, le=10, description="async: retries after a failure (default 2)")
    schedule: Schedule | None = Field(default=None, description="cron expressions (5 fields, or 6 with seconds)")
    http_payload_format: HttpPayloadFormat = Field(
        default="2.0", description="HTTP trigger event: AWS payload format 2.0 (function URL) or 1.0 (proxy)"
    )
    image: str | None = Field(
        default=None,
        max_length=255,
        pattern=IMAGE_PATTERN,
        description="language provided: a local Docker image whose entrypoint speaks the Lambda Runtime API",
    )

    _check_route = field_validator("route")(lambda v: None if v is None else normalize_route(v))
    _check_env = field_validator("env")(lambda v: check_env(v))

    @model_validator(mode="before")
    @classmethod
    def _language_from_runtime(cls, data: Any) -> Any:
        """`runtime: python3.13` alone says the language too."""
        if isinstance(data, dict) and data.get("language") is None and isinstance(data.get("runtime"), str):
            language = language_of_runtime(data["runtime"])
            if language is not None:
                data = {**data, "language": language}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> FunctionSettings:
        if self.image is not None:
            if self.language != "provided":
                raise ValueError("`image` needs language 'provided' (an image's entrypoint speaks the Runtime API)")
            if self.code is not None or self.zip_base64 is not None:
                raise ValueError("an image function has no `code` or `zip_base64`: its code is in the image")
            return self
        if (self.code is None) == (self.zip_base64 is None):
            raise ValueError("give the code as exactly one of `code` (one source file) or `zip_base64` (a zip bundle)")
        return self


class FunctionCreate(FunctionSettings):
    name: Name


class FunctionReplace(FunctionSettings):
    name: Name | None = None


class FunctionPatch(_Strict):
    language: Language | None = None
    runtime: str | None = Field(default=None, max_length=32, description="null: the language's default runtime")
    code: str | None = Field(default=None, min_length=1)
    zip_base64: str | None = Field(default=None, min_length=1)
    description: str | None = Field(default=None, max_length=1024)
    handler: str | None = Field(default=None, pattern=HANDLER_PATTERN, max_length=255)
    route: str | None = None
    timeout_s: float | None = Field(default=None, ge=0.1, le=900)
    memory_mb: int | None = Field(default=None, ge=32, le=4096)
    cpus: float | None = Field(default=None, ge=0.05, le=8)
    env: dict[str, str] | None = None
    backend: str | None = Field(default=None, max_length=32)
    min_warm: int | None = Field(default=None, ge=0, le=100)
    max_instances: int | None = Field(default=None, ge=1, le=1000)
    concurrency: int | None = Field(default=None, ge=1, le=1000)
    auth: Literal["public", "key"] | None = None
    network: bool | None = None
    batch: BatchSettings | None = Field(default=None, description="null turns batching off")
    retries: int | None = Field(default=None, ge=0, le=10, description="null: the default (2)")
    schedule: Schedule | None = Field(default=None, description="null removes the schedule")
    http_payload_format: HttpPayloadFormat | None = Field(default=None, description="null: the default (2.0)")
    image: str | None = Field(
        default=None, max_length=255, pattern=IMAGE_PATTERN, description="an image function's image"
    )

    _check_route = field_validator("route")(lambda v: None if v is None else normalize_route(v))
    _check_env = field_validator("env")(lambda v: None if v is None else check_env(v))

    @model_validator(mode="after")
    def _one_source(self) -> FunctionPatch:
        if self.code is not None and self.zip_base64 is not None:
            raise ValueError("give at most one of `code` and `zip_base64`")
        return self


class FunctionOut(BaseModel):
    name: str
    owner: str = Field(default="admin", description="the user who owns the function")
    version: int
    route: str
    language: Language
    runtime: str | None = Field(default=None, description="the runtime the current version runs on")
    handler: str
    timeout_s: float
    memory_mb: int
    cpus: float
    env: dict[str, str]
    backend: str
    min_warm: int
    max_instances: int
    concurrency: int
    auth: str
    network: bool
    code_sha256: str
    code_size: int
    created_at: datetime
    updated_at: datetime
    batch: BatchSettings | None = None
    retries: int | None = None
    schedule: list[str] | None = None
    description: str = ""
    http_payload_format: HttpPayloadFormat = "2.0"
    layer: str | None = Field(default=None, description="key of the dependency layer (requirements / package.json)")
    build_id: str | None = Field(default=None, description="the build that made the layer")
    image: str | None = Field(default=None, description="an image function's image (language provided)")
    image_id: str | None = Field(default=None, description="the image's id when this version was deployed")
    code: str | None = Field(default=None, description="source; only on GET of one function")
    files: list[str] | None = Field(default=None, description="the bundle's files; only on GET of one function")
    instances: dict[str, int] | None = Field(default=None, description="warm / busy / starting sandboxes")


class FunctionVersionOut(BaseModel):
    version: int
    created_at: datetime
    code_sha256: str
    code_size: int
    language: Language
    handler: str
    route: str
    timeout_s: float
    memory_mb: int
    cpus: float
    backend: str


class FunctionList(BaseModel):
    functions: list[FunctionOut]
