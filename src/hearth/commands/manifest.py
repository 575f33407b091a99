"""hearth.toml: a function's settings next to its code, read by `hearth deploy`.

Every key is a setting of the function API (`name`, `language` or `runtime`, `handler`, `route`, `timeout_s`,
`memory_mb`, `env`, ...); `exclude` lists glob patterns of files not to upload. `name` defaults to
the directory's name.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hearth.api.functions.schemas import NAME_PATTERN, FunctionSettings, language_of_runtime
from hearth.commands.common import UsageError

MANIFEST = "hearth.toml"
CLI_KEYS = ("exclude",)
NOT_IN_MANIFEST = ("code", "zip_base64")


@dataclass
class Manifest:
    path: Path
    settings: dict[str, Any]
    exclude: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.settings["name"])


def allowed_keys() -> list[str]:
    settings = [key for key in FunctionSettings.model_fields if key not in NOT_IN_MANIFEST]
    return sorted(["name", *settings, *CLI_KEYS])


def load_manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST
    if not path.is_file():
        raise UsageError(f"no {MANIFEST} in {directory} (start one with `hearth init NAME --language python`)")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(allowed_keys()))
    if unknown:
        raise UsageError(f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(allowed_keys())}")
    exclude = data.pop("exclude", [])
    if not isinstance(exclude, list) or not all(isinstance(item, str) for item in exclude):
        raise UsageError(f"{path}: exclude must be a list of glob patterns")
    if "name" not in data:
        default = directory.resolve().name
        if not re.match(NAME_PATTERN, default):
            raise UsageError(f"{path}: set `name` (the directory name {default!r} is not a valid function name)")
        data["name"] = default
    if "language" not in data and isinstance(data.get("runtime"), str):
        data["language"] = language_of_runtime(data["runtime"])  # `runtime = "python3.13"` says the language too
    if not data.get("language"):
        raise UsageError(f"{path}: set `language` (python or javascript) or `runtime` (e.g. python3.13, nodejs20.x)")
    return Manifest(path, data, exclude)
