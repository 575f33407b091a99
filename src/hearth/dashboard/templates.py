"""Starter code for new functions (the handler shapes of docs/api.md, "Handlers")."""

from __future__ import annotations

TEMPLATES: dict[str, dict[str, str]] = {
    "python": {
        "Hello (JSON in, JSON out)": '''def handler(event, context):
    """Called with the event (any JSON) and a context; returns any JSON value."""
    who = event.get("who", "world") if isinstance(event, dict) else "world"
    print(f"greeting {who}")  # kept with the invocation's logs
    return {"hello": who, "version": context.function_version}
''',
        "HTTP endpoint (statusCode / body)": '''import json


def handler(event, context):
    """Through the HTTP trigger /fn/<route>: a Lambda function URL's event (payload format 2.0)."""
    name = (event.get("queryStringParameters") or {}).get("name", "world")
    method = event["requestContext"]["http"]["method"]
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"message": f"hello {name}", "method": method, "path": event["rawPath"]}),
    }
''',
        "Async handler": """import asyncio


async def handler(event, context):
    await asyncio.sleep(0.01)
    return {"remaining_ms": context.get_remaining_time_in_millis(), "event": event}
""",
        "Batch handler (list of events)": '''def handler(events, context):
    """With batching and batch_handler on, called once with a list of events; returns one result each."""
    return [sum(e.get("numbers", [])) for e in events]
''',
    },
    "javascript": {
        "Hello (JSON in, JSON out)": """exports.handler = async (event, context) => {
  const who = (event && event.who) || "world";
  console.log(`greeting ${who}`); // kept with the invocation's logs
  return { hello: who, version: context.functionVersion };
};
""",
        "HTTP endpoint (statusCode / body)": """exports.handler = async (event) => {
  // Through the HTTP trigger /fn/<route>: a Lambda function URL's event (payload format 2.0).
  const name = (event.queryStringParameters && event.queryStringParameters.name) || "world";
  return {
    statusCode: 200,
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ message: `hello ${name}`, method: event.requestContext.http.method, path: event.rawPath }),
  };
};
""",
        "Batch handler (list of events)": """exports.handler = async (events) =>
  events.map((e) => (e.numbers || []).reduce((a, b) => a + b, 0));
""",
    },
    # A custom runtime: the code is the `bootstrap` itself, which loops over the Lambda Runtime API.
    "provided": {
        "Shell bootstrap (Runtime API with curl)": """#!/bin/sh
# A custom runtime (docs/runtimes.md): ask for an event, answer it, forever.
api="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
while true; do
  headers="$(mktemp)"
  event=$(curl -sS -D "$headers" "$api/invocation/next")
  id=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$headers" | tr -d '[:space:]' | cut -d: -f2)
  rm -f "$headers"
  echo "got $event" >&2  # kept with the invocation's logs
  printf '{"hello": "world", "event": %s}' "$event" |
    curl -sS -o /dev/null "$api/invocation/$id/response" --data-binary @-
done
""",
    },
}


def default_template(language: str) -> str:
    return next(iter(TEMPLATES[language]))
