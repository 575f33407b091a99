"""`hearth init NAME --language python|javascript|provided`: a new function's directory, ready to deploy."""

from __future__ import annotations

import enum
import re
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from hearth.api.functions.schemas import NAME_PATTERN
from hearth.commands.common import UsageError, fail, handle_errors, out


class Language(enum.StrEnum):
    python = "python"
    javascript = "javascript"
    provided = "provided"


# What the commented-out `runtime` line of a new manifest suggests: the newest of the language's runtimes.
LATEST_RUNTIME = {Language.python: "python3.13", Language.javascript: "nodejs20.x", Language.provided: "provided"}

MANIFEST = """\
# Settings of the function `{name}`: every key is a setting of Hearth's function API
# (see docs/cli.md). `hearth deploy` uploads this directory with them.
name = "{name}"
language = "{language}"
# runtime = "{runtime}"  # a version: python3.11, python3.13, nodejs18.x, nodejs20.x, provided (`GET /api/runtimes`)
handler = "{handler}"
timeout_s = 30
memory_mb = 128
# route = "/{name}"          # HTTP trigger: /fn/{name}
# http_payload_format = "1.0" # the trigger's event: "2.0" (Lambda function URL, default) or "1.0" (API Gateway)
# exclude = ["tests"]        # files not to upload (glob patterns)

[env]
GREETING = "hello"
"""

FILES: dict[Language, dict[str, str]] = {
    Language.python: {
        "main.py": '''\
import os


def handler(event, context):
    """Called with the event (any JSON) and a Lambda-style context."""
    who = event.get("who", "world") if isinstance(event, dict) else "world"
    return {"message": f"{os.environ.get('GREETING', 'hello')}, {who}!", "function": context.function_name}
''',
        "requirements.txt": "# Packages installed at deploy time, one per line (e.g. requests==2.32.3)\n",
    },
    Language.javascript: {
        "index.js": """\
exports.handler = async (event, context) => {
  const who = (event && event.who) || 'world';
  return { message: `${process.env.GREETING || 'hello'}, ${who}!`, function: context.functionName };
};
""",
        "package.json": '{\n  "name": "%s",\n  "private": true,\n  "dependencies": {}\n}\n',
    },
    # A custom runtime: a shell bootstrap looping over the Lambda Runtime API with curl (docs/runtimes.md).
    Language.provided: {
        "bootstrap": """\
#!/bin/sh
# A custom runtime: ask the Runtime API for an event, run the handler named by $_HANDLER
# (file.function: function.handler runs `handler` from function.sh), post its output back.
set -euo pipefail
source "$LAMBDA_TASK_ROOT/$(echo "$_HANDLER" | cut -d. -f1).sh"
api="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
while true; do
  headers="$(mktemp)"
  event=$(curl -sS -D "$headers" "$api/invocation/next")
  request_id=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$headers" | tr -d '[:space:]' | cut -d: -f2)
  rm -f "$headers"
  if response=$($(echo "$_HANDLER" | cut -d. -f2) "$event"); then
    curl -sS -o /dev/null "$api/invocation/$request_id/response" -d "$response"
  else
    curl -sS -o /dev/null "$api/invocation/$request_id/error" \\
      -d '{"errorMessage": "the handler failed", "errorType": "HandlerError"}'
  fi
done
""",
        "function.sh": """\
handler () {
  echo "got: $1" >&2   # stderr and stdout are this invocation's logs
  printf '{"message": "%s, world!", "function": "%s"}' "${GREETING:-hello}" "$AWS_LAMBDA_FUNCTION_NAME"
}
""",
    },
}
HANDLERS = {
    Language.python: "main.handler",
    Language.javascript: "index.handler",
    Language.provided: "function.handler",
}


@handle_errors
def init(
    name: Annotated[str, typer.Argument(help="function name: lowercase letters, digits and '-'")],
    language: Annotated[Language, typer.Option("--language", "-l", help="python, javascript, provided")],
    directory: Annotated[Path | None, typer.Option("--dir", help="where to create it (default ./NAME)")] = None,
) -> None:
    """Create a function directory with hearth.toml and a handler to start from."""
    if not re.match(NAME_PATTERN, name):
        raise UsageError(f"{name!r} is not a valid function name (lowercase letters, digits and '-', 1-63 chars)")
    target = directory or Path(name)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        fail(f"{target} already exists and is not empty")
    target.mkdir(parents=True, exist_ok=True)
    manifest = MANIFEST.format(
        name=name, language=language.value, handler=HANDLERS[language], runtime=LATEST_RUNTIME[language]
    )
    (target / "hearth.toml").write_text(manifest)
    for filename, content in FILES[language].items():
        (target / filename).write_text(content.replace("%s", name) if filename == "package.json" else content)
        if filename == "bootstrap":
            (target / filename).chmod(0o755)
    out.print(f"created [bold]{escape(str(target))}[/bold] ({language.value}); deploy it with: hearth deploy {target}")
