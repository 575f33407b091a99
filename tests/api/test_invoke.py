"""Invocation through the API and the HTTP trigger, with real sandboxes."""

from __future__ import annotations

import json
import sqlite3
import time

import httpx

from hearth.testing import HearthServer

PY_CONTEXT = """
def handler(event, context):
    return {
        "event": event,
        "name": context.function_name,
        "version": context.function_version,
        "id": context.invocation_id,
        "memory": context.memory_limit_in_mb,
        "remaining_ok": 0 < context.get_remaining_time_in_millis() <= 30000,
    }
"""

JS_CONTEXT = """
exports.handler = async (event, context) => ({
  event,
  name: context.functionName,
  version: context.functionVersion,
  id: context.invocationId,
  memory: context.memoryLimitInMB,
  remaining_ok: context.getRemainingTimeInMillis() > 0 && context.getRemainingTimeInMillis() <= 30000,
});
"""


def check_context_reply(response: httpx.Response, name: str) -> None:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["event"] == {"n": 1, "s": "é"}
    # As Lambda's runtimes read them from AWS_LAMBDA_FUNCTION_*: strings.
    assert (body["name"], body["version"], body["memory"]) == (name, "1", "128")
    assert body["id"] == response.headers["X-Hearth-Invocation-Id"]
    assert body["remaining_ok"] is True
    assert response.headers["X-Hearth-Version"] == "1"
    assert float(response.headers["X-Hearth-Duration-Ms"]) >= 0


def test_python_function_cold_then_warm(hearth: HearthServer, fname: str, backend: str) -> None:
    hearth.deploy(fname, PY_CONTEXT, backend=backend)
    first = hearth.invoke(fname, {"n": 1, "s": "é"})
    check_context_reply(first, fname)
    assert first.headers["X-Hearth-Cold"] == "true"
    second = hearth.invoke(fname, {"n": 1, "s": "é"})
    check_context_reply(second, fname)
    assert second.headers["X-Hearth-Cold"] == "false"
    assert second.headers["X-Hearth-Invocation-Id"] != first.headers["X-Hearth-Invocation-Id"]


def test_javascript_function(hearth: HearthServer, fname: str, backend: str) -> None:
    hearth.deploy(fname, JS_CONTEXT, language="javascript", backend=backend)
    check_context_reply(hearth.invoke(fname, {"n": 1, "s": "é"}), fname)
    assert hearth.invoke(fname, {"n": 1, "s": "é"}).headers["X-Hearth-Cold"] == "false"


def test_python_async_handler_and_any_json_event(hearth: HearthServer, fname: str) -> None:
    code = "import asyncio\n\nasync def handler(event, context):\n    await asyncio.sleep(0.01)\n    return event\n"
    hearth.deploy(fname, code)
    for event in ([1, 2, 3], "text", 42, None, {"nested": {"a": [True, False]}}):
        response = hearth.client.post(f"/api/functions/{fname}/invoke", content=json.dumps(event))
        assert response.status_code == 200
        assert response.json() == event
    empty = hearth.client.post(f"/api/functions/{fname}/invoke", content=b"")
    assert empty.json() == {}


def test_invalid_json_event_is_422(hearth: HearthServer, fname: str) -> None:
    hearth.deploy(fname, "def handler(e, c):\n    return 1\n")
    response = hearth.client.post(f"/api/functions/{fname}/invoke", content=b"{oops")
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "InvalidJSON"


def test_http_trigger_event_and_plain_result(hearth: HearthServer, fname: str) -> None:
    hearth.deploy(fname, "def handler(event, context):\n    return event\n", route=f"/{fname}/api")
    response = httpx.post(
        f"{hearth.base_url}/fn/{fname}/api/items?x=1&y=two", content=b"hello", headers={"X-Custom": "abc"}
    )
    assert response.status_code == 200, response.text
    event = response.json()  # a function URL's event (the full contract: tests/api/test_http_events.py)
    assert (event["version"], event["requestContext"]["http"]["method"]) == ("2.0", "POST")
    assert event["rawPath"] == "/items"  # the path below the function's route
    assert event["queryStringParameters"] == {"x": "1", "y": "two"}
    assert event["headers"]["x-custom"] == "abc"
    assert (event["body"], event["isBase64Encoded"]) == ("hello", False)
    binary = httpx.put(f"{hearth.base_url}/fn/{fname}/api", content=bytes([0xFF, 0x00, 0x80]))
    assert binary.json()["isBase64Encoded"] is True and binary.json()["body"] == "/wCA"
    assert binary.json()["rawPath"] == "/"


def test_http_trigger_lambda_proxy_response_python_and_js(hearth: HearthServer, fname: str) -> None:
    py = (
        "def handler(event, context):\n"
        "    method = event['requestContext']['http']['method']\n"
        "    return {'statusCode': 201, 'headers': {'X-Made': 'py'}, 'body': 'created ' + method}\n"
    )
    js = (
        "exports.handler = async (event) => ({statusCode: 418, headers: {'content-type': 'application/json'},"
        " body: JSON.stringify({teapot: event.queryStringParameters.q})});\n"
    )
    hearth.deploy(fname, py)
    hearth.deploy(fname + "-js", js, language="javascript")
    response = httpx.get(f"{hearth.base_url}/fn/{fname}")
    assert (response.status_code, response.text, response.headers["x-made"]) == (201, "created GET", "py")
    response = httpx.get(f"{hearth.base_url}/fn/{fname}-js?q=earl-grey")
    assert response.status_code == 418
    assert response.json() == {"teapot": "earl-grey"}


def test_http_trigger_with_key_auth(hearth: HearthServer, fname: str) -> None:
    hearth.deploy(fname, "def handler(e, c):\n    return 'secret'\n", auth="key")
    assert httpx.get(f"{hearth.base_url}/fn/{fname}").status_code == 401
    ok = httpx.get(f"{hearth.base_url}/fn/{fname}", headers={"Authorization": f"Bearer {hearth.api_key}"})
    assert ok.json() == "secret"


def test_handler_exception_is_500_with_traceback(hearth: HearthServer, fname: str) -> None:
    code = "def helper():\n    raise ValueError('bad input')\n\ndef handler(event, context):\n    helper()\n"
    hearth.deploy(fname, code)
    response = hearth.invoke(fname)
    assert response.status_code == 500
    error = response.json()["error"]
    assert (error["type"], error["message"]) == ("ValueError", "bad input")
    assert "helper" in error["traceback"] and "line 2" in error["traceback"]
    assert hearth.invoke(fname).status_code == 500  # the sandbox survived and still answers

    hearth.deploy(
        fname + "-js",
        "exports.handler = async () => { throw new TypeError('js bad'); };",
        language="javascript",
    )
    js = hearth.invoke(fname + "-js")
    assert js.status_code == 500
    assert (js.json()["error"]["type"], js.json()["error"]["message"]) == ("TypeError", "js bad")


def test_code_that_does_not_load_is_500_init_error(hearth: HearthServer, fname: str) -> None:
    hearth.deploy(fname, "def handler(event, context)\n    return 1\n")
    response = hearth.invoke(fname)
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "Runtime.UserCodeSyntaxError"
    assert response.json()["error"]["phase"] == "init"
    hearth.deploy(fname + "-nohandler", "def other(event, context):\n    return 1\n")
    missing = hearth.invoke(fname + "-nohandler")
    assert missing.status_code == 500 and missing.json()["error"]["phase"] == "init"


def test_non_serialisable_result_is_a_clear_error(hearth: HearthServer, fname: str) -> None:
    hearth.deploy(fname, "def handler(e, c):\n    return object()\n")
    response = hearth.invoke(fname)
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "ResultNotSerializable"


def test_update_serves_the_new_version_at_once(hearth: HearthServer, fname: str) -> None:
    hearth.deploy(fname, "def handler(e, c):\n    return 'one'\n")
    assert hearth.invoke(fname).json() == "one"
    assert hearth.invoke(fname).headers["X-Hearth-Cold"] == "false"
    put = hearth.client.patch(f"/api/functions/{fname}", json={"code": "def handler(e, c):\n    return 'two'\n"})
    assert put.json()["version"] == 2
    response = hearth.invoke(fname)
    assert response.json() == "two"
    assert response.headers["X-Hearth-Version"] == "2"


# The one home of the timeout and out-of-memory checks on every backend: the answer, the record's status,
# the replaced sandbox. (tests/unit/engine/ covers the engine's part without Docker; tests/engine/test_microvm.py
# the VM backends' own; tests/security/test_hostile_functions.py other hostile shapes that end the same way.)
def status_of(hearth: HearthServer, response: httpx.Response) -> str:
    """The status the invocation's record was given."""
    record = hearth.client.get(f"/api/invocations/{response.headers['X-Hearth-Invocation-Id']}").json()
    return str(record["status"])


def test_timeout_is_504_promptly_and_the_next_call_works(hearth: HearthServer, fname: str, backend: str) -> None:
    code = (
        "def handler(event, context):\n"
        "    if event.get('spin'):\n"
        "        while True:\n"
        "            pass\n"
        "    return 'fine'\n"
    )
    hearth.deploy(fname, code, timeout_s=1, backend=backend)
    assert hearth.invoke(fname).json() == "fine"  # warm the sandbox so the timer covers only the handler
    started = time.monotonic()
    response = hearth.invoke(fname, {"spin": True})
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "Timeout"
    assert elapsed < 3.0, f"504 came {elapsed:.2f} s after a 1 s timeout"  # a hang, not a speed check
    assert status_of(hearth, response) == "timeout"
    after = hearth.invoke(fname)
    assert (after.status_code, after.json()) == (200, "fine")
    assert after.headers["X-Hearth-Cold"] == "true"  # the stuck sandbox was replaced


def test_memory_bomb_is_502_out_of_memory(hearth: HearthServer, fname: str, backend: str) -> None:
    code = (
        "def handler(event, context):\n"
        "    if event.get('bomb'):\n"
        "        blocks = []\n"
        "        while True:\n"
        "            blocks.append(bytearray(8 * 1024 * 1024))\n"
        "    return 'ok'\n"
    )
    hearth.deploy(fname, code, memory_mb=64, backend=backend)
    response = hearth.invoke(fname, {"bomb": True})
    assert response.status_code == 502, response.text
    assert response.json()["error"]["type"] == "OutOfMemory"
    assert status_of(hearth, response) == "oom"
    assert hearth.invoke(fname).json() == "ok"


def test_javascript_memory_bomb_is_out_of_memory(hearth: HearthServer, fname: str, backend: str) -> None:
    code = (
        "exports.handler = async (event) => {\n"
        "  const keep = [];\n"
        "  if (event.bomb) { for (;;) { keep.push(Buffer.alloc(8 * 1024 * 1024, 1)); } }\n"
        "  return 'ok';\n"
        "};\n"
    )
    hearth.deploy(fname, code, language="javascript", memory_mb=64, backend=backend)
    response = hearth.invoke(fname, {"bomb": True})
    assert response.status_code == 502, response.text
    assert response.json()["error"]["type"] == "OutOfMemory"


def test_logs_are_kept_with_each_invocation_record(hearth: HearthServer, fname: str) -> None:
    code = (
        "import sys\n"
        "def handler(event, context):\n"
        "    print('out', event['n'])\n"
        "    print('err', event['n'], file=sys.stderr)\n"
        "    return event['n']\n"
    )
    hearth.deploy(fname, code)
    ids = {hearth.invoke(fname, {"n": n}).headers["X-Hearth-Invocation-Id"]: n for n in range(3)}
    deadline = time.monotonic() + 5
    rows: list[tuple[str, str, str, str, int]] = []
    while time.monotonic() < deadline and len(rows) < 3:
        time.sleep(0.3)
        with sqlite3.connect(hearth.data_dir / "hearth.db") as db:
            rows = db.execute(
                "SELECT id, stdout, stderr, status, version FROM invocations WHERE function_name = ?",
                (fname,),
            ).fetchall()
    assert len(rows) == 3
    for inv_id, stdout, stderr, status, version in rows:
        n = ids[inv_id]
        assert (stdout, stderr, status, version) == (f"out {n}\n", f"err {n}\n", "ok", 1)
