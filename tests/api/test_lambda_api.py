"""The AWS Lambda API subset, driven by the real, unmodified boto3 client against a running Hearth."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from hearth.testing import HearthServer, zipped

boto3 = pytest.importorskip("boto3")
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

PY_HANDLER = """\
import os

def lambda_handler(event, context):
    print("processing", event)
    if event.get("fail"):
        raise ValueError("asked to fail")
    if event.get("sleep"):
        import time
        time.sleep(event["sleep"])
    return {"echo": event, "greeting": os.environ.get("GREETING"), "request": context.aws_request_id}
"""
JS_HANDLER = "exports.handler = async (event, context) => ({ node: true, got: event, fn: context.functionName });\n"


def lambda_client(server: HearthServer, secret: str | None = None, key_id: str = "hearth", **config: Any) -> Any:
    return boto3.client(
        "lambda",
        endpoint_url=server.base_url,
        region_name="eu-west-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret if secret is not None else server.api_key,
        config=Config(**config) if config else None,
    )


@pytest.fixture
def aws(hearth: HearthServer) -> Any:
    return lambda_client(hearth)


@pytest.fixture
def py_function(aws: Any, fname: str) -> Iterator[str]:
    aws.create_function(
        FunctionName=fname,
        Runtime="python3.11",
        Role="arn:aws:iam::123456789012:role/lambda",
        Handler="lambda_function.lambda_handler",
        Code={"ZipFile": zipped({"lambda_function.py": PY_HANDLER})},
        Environment={"Variables": {"GREETING": "hi"}},
        Description="made by boto3",
        Timeout=10,
    )
    yield fname


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    return exc.value.response["Error"]["Code"], exc.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_create_get_list_update_delete(aws: Any, py_function: str) -> None:
    config = aws.get_function(FunctionName=py_function)["Configuration"]
    assert config["FunctionName"] == py_function
    assert config["FunctionArn"] == f"arn:aws:lambda:eu-west-1:000000000000:function:{py_function}"
    assert config["Runtime"].startswith("python3.") and config["Handler"] == "lambda_function.lambda_handler"
    assert (config["Timeout"], config["MemorySize"], config["State"]) == (10, 128, "Active")
    assert config["Environment"]["Variables"] == {"GREETING": "hi"} and config["Description"] == "made by boto3"
    assert aws.get_function_configuration(FunctionName=py_function)["RevisionId"] == config["RevisionId"]
    listed = aws.get_paginator("list_functions").paginate().build_full_result()["Functions"]
    names = [fn["FunctionName"] for fn in listed]
    assert py_function in names

    updated = aws.update_function_configuration(
        FunctionName=py_function, Timeout=20, MemorySize=256, Environment={"Variables": {"GREETING": "hello"}}
    )
    assert (updated["Timeout"], updated["MemorySize"]) == (20, 256)
    assert updated["RevisionId"] != config["RevisionId"]
    new_code = "def lambda_handler(event, context):\n    return 'second version'\n"
    code = aws.update_function_code(FunctionName=py_function, ZipFile=zipped({"lambda_function.py": new_code}))
    assert code["CodeSha256"] != config["CodeSha256"]
    assert json.loads(aws.invoke(FunctionName=py_function)["Payload"].read()) == "second version"
    with pytest.raises(ClientError) as stale:
        aws.update_function_configuration(FunctionName=py_function, Timeout=5, RevisionId=config["RevisionId"])
    assert error_code(stale) == ("PreconditionFailedException", 412)

    aws.delete_function(FunctionName=py_function)
    with pytest.raises(ClientError) as gone:
        aws.get_function(FunctionName=py_function)
    assert error_code(gone) == ("ResourceNotFoundException", 404)


def test_invoke_request_response_with_log_tail(aws: Any, py_function: str) -> None:
    response = aws.invoke(FunctionName=py_function, Payload=json.dumps({"n": 1}), LogType="Tail")
    assert response["StatusCode"] == 200 and "FunctionError" not in response
    payload = json.loads(response["Payload"].read())
    assert payload["echo"] == {"n": 1} and payload["greeting"] == "hi"
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"] == payload["request"]
    log = base64.b64decode(response["LogResult"]).decode()
    assert "processing {'n': 1}" in log and log.startswith("START RequestId:") and "REPORT RequestId:" in log


def test_a_handler_error_is_200_with_function_error(aws: Any, py_function: str) -> None:
    response = aws.invoke(FunctionName=py_function, Payload=json.dumps({"fail": True}))
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    payload = json.loads(response["Payload"].read())
    assert payload["errorType"] == "ValueError" and payload["errorMessage"] == "asked to fail"
    assert any("lambda_function.py" in line for line in payload["stackTrace"])


def test_function_names_arns_qualifiers_and_url_encoding(aws: Any, py_function: str) -> None:
    arn = f"arn:aws:lambda:eu-west-1:000000000000:function:{py_function}"
    for name in (arn, f"{py_function}:$LATEST", f"000000000000:function:{py_function}", f"{arn}:$LATEST"):
        response = aws.invoke(FunctionName=name, Payload=b'{"via": "name"}')
        assert response["StatusCode"] == 200, name
        assert json.loads(response["Payload"].read())["echo"] == {"via": "name"}
    assert aws.get_function(FunctionName=arn)["Configuration"]["FunctionName"] == py_function
    with pytest.raises(ClientError) as old:
        aws.invoke(FunctionName=py_function, Qualifier="7")
    assert error_code(old) == ("ResourceNotFoundException", 404)


def test_event_and_dry_run_invocations(aws: Any, hearth: HearthServer, py_function: str) -> None:
    assert aws.invoke(FunctionName=py_function, InvocationType="DryRun")["StatusCode"] == 204
    assert hearth.client.get(f"/api/functions/{py_function}").json()["instances"]["warm"] == 0  # nothing ran
    event = aws.invoke(FunctionName=py_function, InvocationType="Event", Payload=b'{"async": true}')
    assert event["StatusCode"] == 202 and event["Payload"].read() == b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # it runs after the 202: a sandbox was started for it
        instances = hearth.client.get(f"/api/functions/{py_function}").json()["instances"]
        if instances["warm"] + instances["busy"] >= 1:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the Event invocation never ran")
    job_id = event["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]  # a job of the durable async queue
    while (job := hearth.client.get(f"/api/invocations/{job_id}").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    assert job["status"] == "succeeded" and job["source"] == "lambda", job
    assert job["result"]["echo"] == {"async": True} and job["result"]["request"] == job["last_record_id"]


def test_javascript_function_through_lambda(aws: Any, fname: str) -> None:
    created = aws.create_function(
        FunctionName=fname,
        Runtime="nodejs18.x",
        Role="arn:aws:iam::123456789012:role/lambda",
        Handler="index.handler",
        Code={"ZipFile": zipped({"index.js": JS_HANDLER})},
    )
    assert created["Runtime"].startswith("nodejs") and created["Timeout"] == 3  # Lambda's default
    payload = json.loads(aws.invoke(FunctionName=fname, Payload=b'{"a": 1}')["Payload"].read())
    assert payload == {"node": True, "got": {"a": 1}, "fn": fname}


def test_errors_carry_lambda_error_types(aws: Any, hearth: HearthServer, py_function: str) -> None:
    with pytest.raises(ClientError) as missing:
        aws.invoke(FunctionName="no-such-function")
    assert error_code(missing) == ("ResourceNotFoundException", 404)
    with pytest.raises(ClientError) as duplicate:
        aws.create_function(
            FunctionName=py_function,
            Runtime="python3.11",
            Role="r",
            Handler="lambda_function.lambda_handler",
            Code={"ZipFile": zipped({"lambda_function.py": PY_HANDLER})},
        )
    assert error_code(duplicate) == ("ResourceConflictException", 409)
    for bad in ({"Runtime": "ruby3.2"}, {"Handler": "missing_module.handler"}, {"FunctionName": "Upper_Case"}):
        arguments = {
            "FunctionName": py_function + "-x",
            "Runtime": "python3.11",
            "Role": "r",
            "Handler": "lambda_function.lambda_handler",
            "Code": {"ZipFile": zipped({"lambda_function.py": PY_HANDLER})},
            **bad,
        }
        with pytest.raises(ClientError) as invalid:
            aws.create_function(**arguments)
        assert error_code(invalid) == ("InvalidParameterValueException", 400), bad
    bad_json = httpx.post(
        f"{hearth.base_url}/2015-03-31/functions/{py_function}/invocations",
        content=b"{not json",
        headers={"Authorization": f"Bearer {hearth.api_key}"},
    )
    assert bad_json.status_code == 400 and bad_json.headers["x-amzn-ErrorType"] == "InvalidRequestContentException"
    assert bad_json.json()["error"]["message"]


def test_operations_hearth_does_not_serve_say_so_as_client_errors(
    aws: Any, hearth: HearthServer, py_function: str
) -> None:
    calls: list[tuple[str, Any, dict[str, Any]]] = [
        ("PublishVersion", aws.publish_version, {"FunctionName": py_function}),
        ("CreateAlias", aws.create_alias, {"FunctionName": py_function, "Name": "live", "FunctionVersion": "1"}),
        ("ListVersionsByFunction", aws.list_versions_by_function, {"FunctionName": py_function}),
        (
            "PutFunctionConcurrency",
            aws.put_function_concurrency,
            {"FunctionName": py_function, "ReservedConcurrentExecutions": 2},
        ),
        ("CreateFunctionUrlConfig", aws.create_function_url_config, {"FunctionName": py_function, "AuthType": "NONE"}),
        ("GetPolicy", aws.get_policy, {"FunctionName": py_function}),
        ("ListLayers", aws.list_layers, {}),
        ("ListEventSourceMappings", aws.list_event_source_mappings, {}),
        (
            "TagResource",
            aws.tag_resource,
            {"Resource": f"arn:aws:lambda:eu-west-1:000000000000:function:{py_function}", "Tags": {"a": "b"}},
        ),
        ("GetAccountSettings", aws.get_account_settings, {}),
    ]
    for operation, call, arguments in calls:
        with pytest.raises(ClientError) as refused:
            call(**arguments)
        assert error_code(refused) == ("UnsupportedOperationException", 501), operation
        message = refused.value.response["Error"]["Message"]
        assert message.startswith(f"Hearth does not support the Lambda operation {operation}"), message
        assert refused.value.response["ResponseMetadata"]["RetryAttempts"] == 0  # botocore does not retry a 501
    assert aws.get_function(FunctionName=py_function)["Configuration"]["FunctionName"] == py_function
    # Authentication comes first, as on every Lambda route; an unknown path under an API version is a 404.
    unsigned = httpx.post(f"{hearth.base_url}/2015-03-31/functions/{py_function}/versions")
    assert unsigned.status_code == 403 and unsigned.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    unknown = httpx.get(
        f"{hearth.base_url}/2015-03-31/nothing-here", headers={"Authorization": f"Bearer {hearth.api_key}"}
    )
    assert unknown.status_code == 404 and unknown.headers["x-amzn-ErrorType"] == "UnknownOperationException"
    assert unknown.json()["Type"] == "User" and "message" in unknown.json()


def test_signatures_are_checked(hearth: HearthServer, py_function: str) -> None:
    with pytest.raises(ClientError) as wrong:
        lambda_client(hearth, secret="not-the-key").list_functions()
    assert error_code(wrong) == ("InvalidSignatureException", 403)
    unsigned = httpx.get(f"{hearth.base_url}/2015-03-31/functions")
    assert unsigned.status_code == 403 and unsigned.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    # Without X-Amz-Invocation-Type the call is RequestResponse (Bearer key for plain HTTP clients).
    plain = httpx.post(
        f"{hearth.base_url}/2015-03-31/functions/{py_function}/invocations",
        json={"plain": 1},
        headers={"Authorization": f"Bearer {hearth.api_key}"},
    )
    assert plain.status_code == 200 and plain.json()["echo"] == {"plain": 1}


def user_lambda_client(hearth: HearthServer, user: str, *scopes: str) -> tuple[Any, dict[str, Any]]:
    made = hearth.client.post(f"/api/users/{user}/keys", json={"scopes": list(scopes)})
    assert made.status_code == 201, made.text
    key = made.json()
    return lambda_client(hearth, key["aws_secret_access_key"], key_id=key["aws_access_key_id"]), key


def test_a_users_key_signs_as_that_user_in_their_namespace(aws: Any, hearth: HearthServer, fname: str) -> None:
    alice, bob = f"alice-{fname}", f"bob-{fname}"
    for user in (alice, bob):
        assert hearth.client.post("/api/users", json={"name": user}).status_code == 201
    as_alice, alice_key = user_lambda_client(hearth, alice, "deploy", "invoke")
    as_bob, _ = user_lambda_client(hearth, bob, "deploy", "invoke")
    reader, _ = user_lambda_client(hearth, alice, "read")
    assert alice_key["aws_access_key_id"] == alice_key["id"]
    assert alice_key["aws_secret_access_key"] not in (alice_key["key"], hearth.api_key)
    code = {"ZipFile": zipped({"lambda_function.py": PY_HANDLER})}
    made = as_alice.create_function(
        FunctionName=fname, Runtime="python3.11", Role="r", Handler="lambda_function.lambda_handler", Code=code
    )
    assert made["FunctionName"] == fname  # bare, in her own namespace
    assert hearth.client.get(f"/api/functions/{alice}.{fname}").json()["owner"] == alice
    assert [fn["FunctionName"] for fn in as_alice.list_functions()["Functions"]] == [fname]
    assert f"{alice}.{fname}" in [fn["FunctionName"] for fn in aws.list_functions()["Functions"]]
    assert json.loads(as_alice.invoke(FunctionName=fname, Payload=b'{"n": 2}')["Payload"].read())["echo"] == {"n": 2}

    # Bob has his own namespace: the same name is free for him, and Alice's function is not there.
    assert as_bob.list_functions()["Functions"] == []
    for name in (fname, f"{alice}.{fname}"):
        for call in (as_bob.get_function, as_bob.invoke, as_bob.delete_function):
            with pytest.raises(ClientError) as hidden:
                call(FunctionName=name)
            assert error_code(hidden) == ("ResourceNotFoundException", 404), (name, call)
    as_bob.create_function(
        FunctionName=fname, Runtime="python3.11", Role="r", Handler="lambda_function.lambda_handler", Code=code
    )
    assert hearth.client.get(f"/api/functions/{bob}.{fname}").status_code == 200

    # Scopes hold on the Lambda API too.
    assert reader.get_function(FunctionName=fname)["Configuration"]["FunctionName"] == fname
    for refused in (
        lambda: reader.invoke(FunctionName=fname),
        lambda: reader.delete_function(FunctionName=fname),
        lambda: reader.update_function_configuration(FunctionName=fname, Timeout=5),
    ):
        with pytest.raises(ClientError) as denied:
            refused()
        assert error_code(denied) == ("AccessDeniedException", 403)

    # A wrong secret, and a revoked key, are refused.
    forged = lambda_client(hearth, alice_key["key"], key_id=alice_key["id"])
    with pytest.raises(ClientError) as wrong:
        forged.list_functions()
    assert error_code(wrong) == ("InvalidSignatureException", 403)
    assert hearth.client.delete(f"/api/keys/{alice_key['id']}").status_code == 204
    with pytest.raises(ClientError) as revoked:
        as_alice.list_functions()
    assert error_code(revoked) == ("UnrecognizedClientException", 403)
    assert aws.get_function(FunctionName=f"{alice}.{fname}")["Configuration"]["FunctionName"] == f"{alice}.{fname}"
    for key in (f"{alice}.{fname}", f"{bob}.{fname}"):
        aws.delete_function(FunctionName=key)


def test_a_full_function_answers_429_and_boto3_retries_by_itself(tmp_path: Path, runtime_images: Any) -> None:
    server = HearthServer(tmp_path / "data", env={"HEARTH_CAPACITY_WAIT_S": "0.2"})
    server.start()
    try:
        aws = lambda_client(server)
        aws.create_function(
            FunctionName="busy",
            Runtime="python3.11",
            Role="r",
            Handler="lambda_function.lambda_handler",
            Code={"ZipFile": zipped({"lambda_function.py": PY_HANDLER})},
        )
        assert server.client.patch("/api/functions/busy", json={"max_instances": 1}).status_code == 200
        assert aws.invoke(FunctionName="busy")["StatusCode"] == 200  # warm the one instance
        no_retries = lambda_client(server, retries={"max_attempts": 0})
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(aws.invoke, FunctionName="busy", Payload=b'{"sleep": 2}')
            time.sleep(0.5)  # the slow call holds the only instance
            with pytest.raises(ClientError) as throttled:
                no_retries.invoke(FunctionName="busy", Payload=b"{}")
            assert error_code(throttled) == ("TooManyRequestsException", 429)
            retrying = lambda_client(server, retries={"max_attempts": 10, "mode": "standard"})
            answer = retrying.invoke(FunctionName="busy", Payload=b'{"after": "retries"}')
            assert json.loads(answer["Payload"].read())["echo"] == {"after": "retries"}
            assert answer["ResponseMetadata"]["RetryAttempts"] >= 1
            assert slow.result()["StatusCode"] == 200
    finally:
        server.stop()
