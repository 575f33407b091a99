"""`hearth init NAME --language python|javascript|provided [--template sh|go]`: a new function's directory,
ready to deploy."""

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
# `--template go` for `provided`: a Go program (standard library only) looping over the Runtime API;
# `hearth deploy` compiles it into `bootstrap` in a sandbox (hearth.commands.go_build).
GO_FILES: dict[str, str] = {
    "go.mod": "module %s\n\ngo 1.19\n",
    "main.go": """\
// A custom runtime in Go, standard library only: ask the Lambda Runtime API for an event, handle it,
// post the answer (docs/runtimes.md). `hearth deploy` builds it into the bundle's `bootstrap`.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
)

type event struct {
	Who  string `json:"who"`
	Fail bool   `json:"fail"`
}

// handler is called with each event's raw JSON; what it returns is the JSON answer.
func handler(raw []byte) (interface{}, error) {
	var e event
	_ = json.Unmarshal(raw, &e)                  // any JSON is an event; fields it lacks stay empty
	fmt.Fprintln(os.Stderr, "got:", string(raw)) // stdout and stderr are this invocation's logs
	if e.Fail {
		return nil, errors.New("asked to fail")
	}
	who, greeting := e.Who, os.Getenv("GREETING")
	if who == "" {
		who = "world"
	}
	if greeting == "" {
		greeting = "hello"
	}
	name := os.Getenv("AWS_LAMBDA_FUNCTION_NAME")
	return map[string]string{"message": greeting + ", " + who + "!", "function": name}, nil
}

func main() {
	api := "http://" + os.Getenv("AWS_LAMBDA_RUNTIME_API") + "/2018-06-01/runtime/invocation/"
	for {
		next, err := http.Get(api + "next")
		if err != nil {
			fmt.Fprintln(os.Stderr, "the Runtime API is gone:", err)
			os.Exit(1)
		}
		raw, _ := io.ReadAll(next.Body)
		next.Body.Close()
		id := next.Header.Get("Lambda-Runtime-Aws-Request-Id")
		result, err := handler(raw)
		if err != nil {
			body, _ := json.Marshal(map[string]string{"errorMessage": err.Error(), "errorType": "HandlerError"})
			post(api+id+"/error", body)
			continue
		}
		body, _ := json.Marshal(result)
		post(api+id+"/response", body)
	}
}

func post(url string, body []byte) {
	answer, err := http.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		fmt.Fprintln(os.Stderr, "the Runtime API is gone:", err)
		os.Exit(1)
	}
	io.Copy(io.Discard, answer.Body) // read to the end: the connection is kept for the next call
	answer.Body.Close()
}
""",
}


class Template(enum.StrEnum):
    sh = "sh"
    go = "go"


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
    template: Annotated[
        Template | None, typer.Option("--template", "-t", help="provided only: sh (default, a curl loop) or go")
    ] = None,
) -> None:
    """Create a function directory with hearth.toml and a handler to start from."""
    if not re.match(NAME_PATTERN, name):
        raise UsageError(f"{name!r} is not a valid function name (lowercase letters, digits and '-', 1-63 chars)")
    if template is not None and language != Language.provided:
        raise UsageError("--template is for -l provided (sh or go)")
    go = template == Template.go
    target = directory or Path(name)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        fail(f"{target} already exists and is not empty")
    target.mkdir(parents=True, exist_ok=True)
    handler = "bootstrap" if go else HANDLERS[language]  # a Go bootstrap reads no handler name
    manifest = MANIFEST.format(name=name, language=language.value, handler=handler, runtime=LATEST_RUNTIME[language])
    (target / "hearth.toml").write_text(manifest)
    for filename, content in (GO_FILES if go else FILES[language]).items():
        named = filename in ("package.json", "go.mod")  # they carry the function's name
        (target / filename).write_text(content.replace("%s", name) if named else content)
        if filename == "bootstrap":
            (target / filename).chmod(0o755)
    kind = f"{language.value}, Go" if go else language.value
    out.print(f"created [bold]{escape(str(target))}[/bold] ({kind}); deploy it with: hearth deploy {target}")
