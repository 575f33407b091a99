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
}


def default_template(language: str) -> str:
    return next(iter(TEMPLATES[language]))
