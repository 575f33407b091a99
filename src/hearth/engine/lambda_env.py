"""What a function sees of Lambda's execution environment: its defined environment variables and identity.

The variables are Lambda's "defined runtime environment variables" (docs/lambda.md lists them with
where Hearth differs). Those Lambda reserves win over the function's own `env`; the others (TZ,
LANG, PATH, NODE_PATH, PYTHONPATH, ...) are defaults the function's `env` may replace, as on Lambda.
The agents apply the result when the function's code is loaded, so stem cells (started before any
function was known) get them too.
"""

from __future__ import annotations

import time
from typing import Any

from hearth.engine.sandbox import FunctionSpec, LambdaIdentity
from hearth.images import catalog

# Lambda's reserved keys: CreateFunction refuses them in Environment.Variables.
RESERVED: tuple[str, ...] = (
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
)
# Set by Lambda, not reserved: the function's own `env` replaces them.
DEFAULTS: dict[str, str] = {"TZ": ":UTC"}
TASK_ROOT = "/hearth/code"  # where the backends place the function's code in the sandbox
# `provided`: Hearth's relay, which serves the Runtime API (hearth.engine.provided).
RUNTIME_DIRS = {"python": "/opt/hearth/python", "javascript": "/opt/hearth/javascript", "provided": "/opt/hearth-relay"}
# Where a custom runtime (language provided) finds the Runtime API: the relay, in its sandbox.
RUNTIME_API = "127.0.0.1:9001"


def lambda_handler(spec: FunctionSpec) -> str:
    """The handler as Lambda spells it (`_HANDLER`): `module.function`, Python packages dotted.

    A custom runtime's handler is the function's own string: its bootstrap reads it its own way.
    """
    language = catalog.language_of(spec.sandbox_runtime)
    if language == "provided":
        return spec.handler
    module, function = spec.module_and_function
    if language == "python":
        module = module.replace("/", ".")
    return f"{module}.{function}"


def log_stream_name(spec: FunctionSpec, sandbox_id: str, now: float | None = None) -> str:
    """`YYYY/MM/DD/[version]id`, the shape of Lambda's log stream names (one per sandbox)."""
    day = time.strftime("%Y/%m/%d", time.gmtime(now if now is not None else time.time()))
    return f"{day}/[{spec.version}]{sandbox_id}"


def environment(spec: FunctionSpec, identity: LambdaIdentity, sandbox_id: str) -> dict[str, str]:
    """The function's environment: Lambda's defaults, then its own `env`, then Lambda's reserved values."""
    runtime = catalog.runtime_image(spec.sandbox_runtime)
    reserved = {
        "_HANDLER": lambda_handler(spec),
        "AWS_REGION": identity.region,
        "AWS_DEFAULT_REGION": identity.region,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{runtime.name}",
        "AWS_LAMBDA_FUNCTION_NAME": spec.name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
        "AWS_LAMBDA_FUNCTION_VERSION": str(spec.version),
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": log_stream_name(spec, sandbox_id),
        "LAMBDA_TASK_ROOT": TASK_ROOT,
        "LAMBDA_RUNTIME_DIR": RUNTIME_DIRS[runtime.language],
    }
    if runtime.language == "provided":  # Lambda sets no AWS_EXECUTION_ENV for its OS-only runtimes
        del reserved["AWS_EXECUTION_ENV"]
        reserved["AWS_LAMBDA_RUNTIME_API"] = RUNTIME_API
    own = {str(k): str(v) for k, v in spec.env.items() if k not in RESERVED}
    return {**DEFAULTS, **own, **reserved}


def reserved_in(env: dict[str, Any]) -> list[str]:
    """The keys of `env` Lambda reserves (CreateFunction refuses them)."""
    return sorted(key for key in env if key in RESERVED)


def init_frame(
    spec: FunctionSpec,
    identity: LambdaIdentity,
    sandbox_id: str,
    *,
    max_log_bytes: int,
    max_result_bytes: int,
    files: list[dict[str, Any]] | None = None,
    deps_dir: str = "/hearth/deps",
) -> dict[str, Any]:
    """The `init` frame that loads `spec` into a sandbox (docs/protocol.md), the same on every backend.

    `deps_dir`: where the backend put the function's dependency layer, if it has one.
    """
    module, function = spec.module_and_function
    frame: dict[str, Any] = {
        "type": "init",
        "code_dir": TASK_ROOT,
        "module": module,
        "function": function,
        "env": environment(spec, identity, sandbox_id),
        "function_name": spec.name,
        "function_version": spec.version,
        "memory_limit_in_mb": spec.memory_mb,
        "invoked_function_arn": identity.function_arn(spec.name),
        "concurrency": spec.concurrency,
        "max_log_bytes": max_log_bytes,
        "max_result_bytes": max_result_bytes,
        "paths": [deps_dir] if spec.layer_dir is not None else [],
    }
    if files is not None:
        frame["files"] = files
    return frame
