"""The HTTP trigger's events and responses, checked against AWS's documented payload formats.

The field lists below are AWS's, copied from its documentation, not from Hearth's output:
- 2.0: Lambda function URLs, "Request payload format" (docs.aws.amazon.com/lambda/latest/dg/urls-invocation.html)
  and API Gateway HTTP APIs, "Payload format version" (.../apigateway/latest/developerguide/
  http-api-develop-integrations-lambda.html).
- 1.0: the same HTTP API page, format 1.0, and the REST API's "Input format of a Lambda function for
  proxy integration" (.../set-up-lambda-proxy-integrations.html).
"""

from __future__ import annotations

import base64
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from hearth.testing import HearthServer

# ----- AWS's field lists
V2_FIELDS = {
    "version", "routeKey", "rawPath", "rawQueryString", "cookies", "headers", "queryStringParameters",
    "requestContext", "body", "pathParameters", "isBase64Encoded", "stageVariables",
}  # fmt: skip
V2_CONTEXT = {
    "accountId", "apiId", "authentication", "authorizer", "domainName", "domainPrefix", "http", "requestId",
    "routeKey", "stage", "time", "timeEpoch",
}  # fmt: skip
V2_HTTP = {"method", "path", "protocol", "sourceIp", "userAgent"}
# Function URLs set these to null "or exclude them from the JSON"; the rest are always there.
V2_OPTIONAL = {"pathParameters", "stageVariables"}
V2_CONTEXT_OPTIONAL = {"authentication", "authorizer"}

V1_FIELDS = {
    "version", "resource", "path", "httpMethod", "headers", "multiValueHeaders", "queryStringParameters",
    "multiValueQueryStringParameters", "requestContext", "pathParameters", "stageVariables", "body",
    "isBase64Encoded",
}  # fmt: skip
V1_CONTEXT = {
    "accountId", "apiId", "authorizer", "domainName", "domainPrefix", "extendedRequestId", "httpMethod",
    "identity", "path", "protocol", "requestId", "requestTime", "requestTimeEpoch", "resourceId", "resourcePath",
    "stage",
}  # fmt: skip
V1_IDENTITY = {
    "accessKey", "accountId", "apiKey", "caller", "cognitoAuthenticationProvider", "cognitoAuthenticationType",
    "cognitoIdentityId", "cognitoIdentityPoolId", "principalOrgId", "sourceIp", "user", "userAgent", "userArn",
    "clientCert",
}  # fmt: skip
V1_CONTEXT_OPTIONAL = {"authorizer"}
V1_IDENTITY_OPTIONAL = {"apiKey", "clientCert"}

CLF_TIME = re.compile(r"^\d{2}/(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)/\d{4}:\d{2}:\d{2}:\d{2} \+0000$")
ECHO = "def handler(event, context):\n    return event\n"
ECHO_V1 = (
    "import json\n\ndef handler(event, context):\n"
    "    return {'statusCode': 200, 'headers': {'content-type': 'application/json'}, 'body': json.dumps(event)}\n"
)
HEADERS = [
    ("X-Multi", "one"),
    ("X-Multi", "two"),
    ("Cookie", "a=1; b=2"),
    ("Content-Type", "application/json"),
    ("User-Agent", "events-test/1"),
]
QUERY = "tag=a&tag=b&empty=&q=x%2By"


def has_fields(obj: dict[str, Any], documented: set[str], optional: set[str], where: str) -> None:
    assert set(obj) <= documented, f"{where}: not AWS's fields: {set(obj) - documented}"
    assert set(obj) >= documented - optional, f"{where}: missing {documented - optional - set(obj)}"


def near_now_ms(value: Any) -> bool:
    return isinstance(value, int) and abs(value - time.time() * 1000) < 300_000


def test_format_2_0_event_is_a_function_urls(hearth: HearthServer, fname: str) -> None:
    hearth.deploy(fname, ECHO)
    response = httpx.post(
        f"{hearth.base_url}/fn/{fname}/items/a%20b?{QUERY}", content=b'{"k": "v"}', headers=HEADERS, timeout=60
    )
    assert response.status_code == 200, response.text
    event = response.json()
    has_fields(event, V2_FIELDS, V2_OPTIONAL, "event")
    has_fields(event["requestContext"], V2_CONTEXT, V2_CONTEXT_OPTIONAL, "requestContext")
    has_fields(event["requestContext"]["http"], V2_HTTP, set(), "requestContext.http")
    assert (event["version"], event["routeKey"]) == ("2.0", "$default")
    assert (event["rawPath"], event["rawQueryString"]) == ("/items/a%20b", QUERY)  # below the route, as sent
    assert event["cookies"] == ["a=1", "b=2"]
    headers = event["headers"]
    assert all(name == name.lower() for name in headers) and "cookie" not in headers
    assert headers["x-multi"] == "one,two"  # "Duplicate headers are combined with commas"
    assert headers["content-type"] == "application/json"
    assert event["queryStringParameters"] == {"tag": "a,b", "empty": "", "q": "x+y"}
    context = event["requestContext"]
    assert (context["routeKey"], context["stage"]) == ("$default", "$default")
    assert context["http"] == {
        "method": "POST",
        "path": "/items/a%20b",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "events-test/1",
    }
    assert context["requestId"] == response.headers["X-Hearth-Invocation-Id"]
    assert context["domainName"] == f"127.0.0.1:{hearth.port}" and context["domainPrefix"] == "127"
    assert isinstance(context["accountId"], str) and isinstance(context["apiId"], str)
    assert CLF_TIME.match(context["time"]) and near_now_ms(context["timeEpoch"]), context
    assert (event["body"], event["isBase64Encoded"]) == ('{"k": "v"}', False)

    # At the route itself, with nothing to send: the optional parts are left out, as AWS does.
    bare = httpx.get(f"{hearth.base_url}/fn/{fname}", headers={"User-Agent": "events-test/1"}, timeout=60).json()
    assert (bare["rawPath"], bare["rawQueryString"], bare["isBase64Encoded"]) == ("/", "", False)
    assert not {"cookies", "queryStringParameters", "body"} & set(bare), bare
    assert bare["requestContext"]["http"]["method"] == "GET"

    # A binary body arrives base64-encoded.
    blob = bytes(range(256))
    binary = httpx.put(
        f"{hearth.base_url}/fn/{fname}/b", content=blob, headers={"content-type": "application/octet-stream"}
    )
    assert binary.json()["isBase64Encoded"] is True and base64.b64decode(binary.json()["body"]) == blob


def test_a_users_function_sees_the_path_below_its_namespaced_route(hearth: HearthServer, fname: str) -> None:
    user = f"u-{fname}"
    assert hearth.client.post("/api/users", json={"name": user}).status_code == 201
    key = hearth.client.post(f"/api/users/{user}/keys", json={"scopes": ["deploy"]}).json()["key"]
    made = httpx.post(
        f"{hearth.base_url}/api/functions",
        json={"name": fname, "language": "python", "code": ECHO},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert made.status_code == 201 and made.json()["route"] == f"/{user}/{fname}", made.text
    event = httpx.get(f"{hearth.base_url}/fn/{user}/{fname}/deep/path", timeout=60).json()
    assert (event["rawPath"], event["requestContext"]["http"]["path"]) == ("/deep/path", "/deep/path")


def test_format_1_0_event_is_api_gateways_proxy_event(hearth: HearthServer, fname: str) -> None:
    made = hearth.deploy(fname, ECHO_V1, http_payload_format="1.0")
    assert made["http_payload_format"] == "1.0"
    response = httpx.post(
        f"{hearth.base_url}/fn/{fname}/items/a%20b?{QUERY}", content=b'{"k": "v"}', headers=HEADERS, timeout=60
    )
    assert response.status_code == 200, response.text
    event = response.json()
    has_fields(event, V1_FIELDS, set(), "event")
    has_fields(event["requestContext"], V1_CONTEXT, V1_CONTEXT_OPTIONAL, "requestContext")
    has_fields(event["requestContext"]["identity"], V1_IDENTITY, V1_IDENTITY_OPTIONAL, "requestContext.identity")
    assert (event["version"], event["httpMethod"]) == ("1.0", "POST")
    assert (event["resource"], event["path"]) == ("/{proxy+}", "/items/a b")
    assert event["pathParameters"] == {"proxy": "items/a b"} and event["stageVariables"] is None
    # `headers` holds one value per name (the last), `multiValueHeaders` all of them
    assert event["headers"]["x-multi"] == "two" and event["multiValueHeaders"]["x-multi"] == ["one", "two"]
    assert event["headers"]["cookie"] == "a=1; b=2"
    assert event["queryStringParameters"] == {"tag": "b", "empty": "", "q": "x+y"}
    assert event["multiValueQueryStringParameters"] == {"tag": ["a", "b"], "empty": [""], "q": ["x+y"]}
    context = event["requestContext"]
    assert (context["httpMethod"], context["resourcePath"], context["path"]) == ("POST", "/{proxy+}", "/items/a b")
    assert context["requestId"] == response.headers["X-Hearth-Invocation-Id"] and context["stage"] == "$default"
    assert context["identity"]["sourceIp"] == "127.0.0.1" and context["identity"]["userAgent"] == "events-test/1"
    assert context["protocol"] == "HTTP/1.1" and context["domainName"] == f"127.0.0.1:{hearth.port}"
    assert CLF_TIME.match(context["requestTime"]) and near_now_ms(context["requestTimeEpoch"]), context
    assert (event["body"], event["isBase64Encoded"]) == ('{"k": "v"}', False)

    bare = httpx.get(f"{hearth.base_url}/fn/{fname}", timeout=60).json()
    assert (bare["resource"], bare["path"], bare["pathParameters"]) == ("/", "/", None)
    assert bare["queryStringParameters"] is None and bare["multiValueQueryStringParameters"] is None
    assert (bare["body"], bare["isBase64Encoded"]) == (None, False)


RESPONDER = """\
import base64

def handler(event, context):
    path = event.get("rawPath") or event.get("path")
    if path == "/string":
        return "hello"
    if path == "/object":
        return {"a": 1}
    if path == "/cookies":
        return {"statusCode": 201, "headers": {"x-one": "1"}, "cookies": ["a=1; Path=/", "b=2"], "body": "ok"}
    if path == "/binary":
        body = base64.b64encode(bytes(range(256))).decode()
        return {"statusCode": 200, "headers": {"content-type": "image/png"}, "isBase64Encoded": True, "body": body}
    if path == "/multi":
        return {
            "statusCode": 200,
            "headers": {"x-a": "h", "x-b": "only"},
            "multiValueHeaders": {"x-a": ["m1", "h"], "set-cookie": ["a=1", "b=2"]},
            "body": "ok",
        }
    if path == "/bad-status":
        return {"statusCode": "200", "body": "no"}
    if path == "/bad-base64":
        return {"statusCode": 200, "isBase64Encoded": True, "body": "not base64!"}
    if path == "/bad-header-name":
        return {"statusCode": 200, "headers": {"bad name": "x"}, "body": "no"}
    if path == "/bad-header-value":
        return {"statusCode": 200, "cookies": ["a=1\\r\\nx-injected: 1"], "body": "no"}
    return None
"""
PUBLIC_FAILURE = {"message": "Internal Server Error"}


def record_of(hearth: HearthServer, response: httpx.Response) -> dict[str, Any]:
    invocation_id = response.headers["X-Hearth-Invocation-Id"]
    deadline = time.monotonic() + 30
    while True:  # records are written behind the request
        record = hearth.client.get(f"/api/invocations/{invocation_id}")
        if record.status_code == 200:
            return record.json()  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, record.text
        time.sleep(0.1)


def test_responses_follow_each_formats_rules(hearth: HearthServer, fname: str) -> None:
    hearth.deploy(fname, RESPONDER)
    url = f"{hearth.base_url}/fn/{fname}"
    # 2.0: a result without statusCode is JSON with status 200 (a string too: the client sees it quoted)
    text = httpx.get(f"{url}/string")
    assert (text.status_code, text.text, text.headers["content-type"]) == (200, '"hello"', "application/json")
    assert httpx.get(f"{url}/object").json() == {"a": 1}
    assert httpx.get(f"{url}/nothing").text == "null"
    cookies = httpx.get(f"{url}/cookies")
    assert (cookies.status_code, cookies.text, cookies.headers["x-one"]) == (201, "ok", "1")
    assert cookies.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2"]  # one Set-Cookie each
    binary = httpx.get(f"{url}/binary")
    assert binary.content == bytes(range(256)) and binary.headers["content-type"] == "image/png"
    for bad in ("bad-status", "bad-base64", "bad-header-name", "bad-header-value"):
        failed = httpx.get(f"{url}/{bad}")
        assert (failed.status_code, failed.json()) == (502, PUBLIC_FAILURE), bad
        assert record_of(hearth, failed)["error"]["type"] == "InvalidResponse"

    # 1.0: headers and multiValueHeaders merge (a pair in both once); a result that is no response is a 502
    assert hearth.client.patch(f"/api/functions/{fname}", json={"http_payload_format": "1.0"}).status_code == 200
    multi = httpx.get(f"{url}/multi")
    assert multi.status_code == 200 and multi.text == "ok"
    assert multi.headers.get_list("x-a") == ["m1", "h"] and multi.headers["x-b"] == "only"
    assert multi.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert httpx.get(f"{url}/binary").content == bytes(range(256))
    for not_a_response in ("string", "object"):
        failed = httpx.get(f"{url}/{not_a_response}")
        assert (failed.status_code, failed.json()) == (502, PUBLIC_FAILURE), not_a_response
        assert record_of(hearth, failed)["error"]["type"] == "InvalidResponse"


FAILING = """\
import time

def handler(event, context):
    if (event.get("rawPath") or "") == "/slow":
        time.sleep(5)
    raise ValueError("card 4111 declined")
"""


def test_a_public_trigger_hides_the_error_that_its_owner_sees(hearth: HearthServer, fname: str) -> None:
    hearth.deploy(fname, FAILING, timeout_s=1)
    failed = httpx.post(f"{hearth.base_url}/fn/{fname}", json={}, timeout=60)
    assert (failed.status_code, failed.json()) == (502, PUBLIC_FAILURE)
    assert "4111" not in failed.text and "Traceback" not in failed.text
    record = record_of(hearth, failed)
    assert record["status"] == "error" and record["error"] == {"type": "ValueError", "message": "card 4111 declined"}
    assert "Traceback" in record["stderr"] and "card 4111 declined" in record["stderr"], record
    invoked = hearth.invoke(fname, {})
    assert invoked.status_code == 500 and "Traceback" in invoked.json()["error"]["traceback"]

    timed_out = httpx.get(f"{hearth.base_url}/fn/{fname}/slow", timeout=60)
    assert (timed_out.status_code, timed_out.json()) == (504, {"message": "Endpoint request timed out"})

    # A trigger that needs the owner's key shows the caller Hearth's own error.
    assert hearth.client.patch(f"/api/functions/{fname}", json={"auth": "key"}).status_code == 200
    keyed = hearth.client.post(f"/fn/{fname}", json={})
    assert keyed.status_code == 500 and keyed.json()["error"]["type"] == "ValueError"


def test_async_trigger_event_keeps_no_credentials(hearth: HearthServer, fname: str) -> None:
    hearth.deploy(fname, ECHO)
    queued = httpx.post(
        f"{hearth.base_url}/fn/{fname}/x",
        json={"via": "trigger"},
        headers={"X-Hearth-Invocation-Type": "async", "Authorization": "Bearer secret", "Cookie": "sid=s3cret"},
        timeout=30,
    )
    assert queued.status_code == 202, queued.text
    job = hearth.wait_job(queued.json()["invocation_id"])
    assert job["status"] == "succeeded", job
    event = job["result"]
    assert event["rawPath"] == "/x" and json.loads(event["body"]) == {"via": "trigger"}
    assert "authorization" not in event["headers"] and "cookies" not in event and "s3cret" not in json.dumps(job)


def test_a_full_public_trigger_answers_429_too_many_requests(tmp_path: Path, runtime_images: Any) -> None:
    server = HearthServer(tmp_path / "data", env={"HEARTH_CAPACITY_WAIT_S": "0.2"})
    server.start()
    try:
        slow = "import time\n\ndef handler(event, context):\n    time.sleep(3 if event['rawPath'] == '/slow' else 0)\n"
        server.deploy("busy", slow, max_instances=1)
        assert httpx.get(f"{server.base_url}/fn/busy", timeout=60).status_code == 200  # the one instance is warm
        with ThreadPoolExecutor(1) as pool:
            holding = pool.submit(httpx.get, f"{server.base_url}/fn/busy/slow", timeout=60)
            deadline = time.monotonic() + 30
            while True:  # until the slow call holds the only instance
                full = httpx.get(f"{server.base_url}/fn/busy", timeout=60)
                if full.status_code != 200 or time.monotonic() > deadline:
                    break
            assert (full.status_code, full.json()) == (429, {"message": "Too Many Requests"}), full.text
            assert int(full.headers["retry-after"]) >= 1
            assert holding.result().status_code == 200
    finally:
        server.stop()
