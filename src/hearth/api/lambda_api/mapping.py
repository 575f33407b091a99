"""Translation between Lambda's shapes and Hearth's: names and ARNs, runtimes, handlers, configurations."""

from __future__ import annotations

import base64
import math
import re
import uuid
from dataclasses import dataclass
from typing import Any

from hearth.api.functions.schemas import NAME_PATTERN, FunctionOut
from hearth.api.lambda_api.errors import LambdaError, invalid
from hearth.engine.lambda_env import reserved_in
from hearth.images import catalog

LATEST = "$LATEST"
ARN_PATTERN = re.compile(
    r"^arn:aws[a-zA-Z-]*:lambda:(?P<region>[a-z0-9-]*):(?P<account>\d*):function:(?P<name>[^:]+)(?::(?P<q>[^:]+))?$"
)
PARTIAL_ARN_PATTERN = re.compile(r"^(?P<account>\d{12}):function:(?P<name>[^:]+)(?::(?P<q>[^:]+))?$")
HEARTH_NAME = re.compile(NAME_PATTERN)
REVISION_NAMESPACE = uuid.UUID("2c0b6a52-1c1d-4d8e-9a55-6f1f4f1d8e90")


@dataclass(frozen=True)
class FunctionRef:
    name: str
    qualifier: str | None


def parse_function_name(raw: str, qualifier: str | None = None) -> FunctionRef:
    """`name`, `name:qualifier`, `account:function:name[:q]` or a full ARN (already URL-decoded)."""
    match = ARN_PATTERN.match(raw) or PARTIAL_ARN_PATTERN.match(raw)
    if match:
        name, inline = match["name"], match["q"]
    else:
        name, _, inline = raw.partition(":")
        inline = inline or None
    if inline and qualifier and inline != qualifier:
        raise invalid(f"The derived qualifier from the function name does not match the specified qualifier: {raw}")
    return FunctionRef(name, qualifier or inline)


def check_name(name: str) -> str:
    if not HEARTH_NAME.match(name):
        raise invalid(
            f"Function name {name!r} is not valid on Hearth: use 1-63 lowercase letters, digits and '-' "
            "(Hearth names are also DNS-safe routes)"
        )
    return name


def arn(region: str, account: str, name: str, qualifier: str | None = None) -> str:
    base = f"arn:aws:lambda:{region}:{account}:function:{name}"
    return f"{base}:{qualifier}" if qualifier else base


def check_runtime(runtime: str | None, available: list[str]) -> str:
    """Lambda's `Runtime`, which must be one this host runs (never replaced by another version).

    Lambda's other names of a runtime (provided.al2023, provided.al2) are accepted and mean the catalog's
    runtime (provided), which is what the function then reports: what it really runs on.
    """
    accepted = [*available, *(alias for alias, target in catalog.ALIASES.items() if target in available)]
    if runtime in accepted:
        return catalog.ALIASES.get(str(runtime), str(runtime))
    raise invalid(
        f"Value {runtime!r} at 'runtime' failed to satisfy constraint: Member must satisfy enum value set: "
        f"[{', '.join(accepted)}] (the runtimes this Hearth runs)"
    )


def language_of(runtime: str) -> str:
    return catalog.language_of(runtime)


def check_environment(variables: dict[str, str]) -> dict[str, str]:
    """Lambda refuses the keys it reserves (AWS_REGION, _HANDLER, ...) in Environment.Variables."""
    if reserved := reserved_in(variables):
        raise invalid(
            "Lambda was unable to configure your environment variables because the environment variables you "
            "have provided contains reserved keys that are currently not supported for modification. "
            f"Reserved keys used in this request: {', '.join(reserved)}"
        )
    return variables


def handler_to_hearth(handler: str, language: str) -> str:
    """Lambda's Python `pkg.module.function` is Hearth's `pkg/module.function`."""
    module, dot, function = handler.rpartition(".")
    if language == "python" and dot and "." in module:
        module = module.replace(".", "/")
    return f"{module}.{function}" if dot else handler


def handler_to_lambda(handler: str, language: str) -> str:
    if language == "provided":  # a custom runtime's handler is its bootstrap's business: as given
        return handler
    if "." not in handler:  # a single-file Hearth function: the module is `main`
        return f"main.{handler}"
    if language == "python":
        module, _, function = handler.rpartition(".")
        return f"{module.replace('/', '.')}.{function}"
    return handler


def revision_id(fn: FunctionOut) -> str:
    return str(uuid.uuid5(REVISION_NAMESPACE, f"{fn.name}/{fn.version}/{fn.code_sha256}/{fn.updated_at.isoformat()}"))


def lambda_timestamp(fn: FunctionOut) -> str:
    return fn.updated_at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{fn.updated_at.microsecond // 1000:03d}+0000"


def configuration(fn: FunctionOut, *, name: str, region: str, account: str) -> dict[str, Any]:
    """`name`: the function's name as the caller knows it (see router.shown_name)."""
    config: dict[str, Any] = {
        "FunctionName": name,
        "FunctionArn": arn(region, account, name),
        "Runtime": fn.runtime or catalog.default_runtime(fn.language),  # what the version really runs on
        "Role": f"arn:aws:iam::{account}:role/hearth",
        "Handler": handler_to_lambda(fn.handler, fn.language),
        "CodeSize": fn.code_size,
        "Description": getattr(fn, "description", None) or "",
        "Timeout": max(1, math.ceil(fn.timeout_s)),
        "MemorySize": fn.memory_mb,
        "LastModified": lambda_timestamp(fn),
        "CodeSha256": base64.b64encode(bytes.fromhex(fn.code_sha256)).decode("ascii"),
        "Version": LATEST,
        "Environment": {"Variables": dict(fn.env)},
        "TracingConfig": {"Mode": "PassThrough"},
        "RevisionId": revision_id(fn),
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Zip",
        "Architectures": ["x86_64"],
        "EphemeralStorage": {"Size": 512},
    }
    if getattr(fn, "image", None):  # an Image package: no Runtime or Handler (Lambda leaves them out too)
        del config["Runtime"], config["Handler"]
        config |= {"PackageType": "Image", "ImageConfigResponse": {}}
    return config


def check_qualifier(ref: FunctionRef, fn: FunctionOut) -> None:
    """Hearth serves the current version only: `$LATEST` or its number."""
    if ref.qualifier in (None, LATEST, str(fn.version)):
        return
    raise LambdaError(
        404,
        "ResourceNotFoundException",
        f"Function not found: {fn.name}:{ref.qualifier} (Hearth serves $LATEST, currently version {fn.version})",
    )
