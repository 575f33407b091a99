"""Real Lambda code runs unchanged: AWS's own handler examples on every runtime, in real sandboxes.

The attribute, property and variable lists are written here from AWS's documentation ("Using the
Lambda context object" for Python and Node.js, "Defined runtime environment variables"), not from
Hearth's output; the log and error shapes are those of AWS's runtime interface clients
(awslambdaric's bootstrap.py, aws-lambda-nodejs-runtime-interface-client's LogPatch.js / Errors.js).
"""

from __future__ import annotations

import base64
import json
import re
import time
from typing import Any

import pytest

from hearth.images import catalog
from hearth.testing import HearthServer, b64_zip, zipped

boto3 = pytest.importorskip("boto3")
from botocore.exceptions import ClientError  # noqa: E402

PYTHON_RUNTIMES = [r for r in catalog.RUNTIMES if r.startswith("python")]
NODE_RUNTIMES = [r for r in catalog.RUNTIMES if r.startswith("nodejs")]
AGENT_RUNTIMES = PYTHON_RUNTIMES + NODE_RUNTIMES  # provided (a custom runtime) has tests of its own: test_provided.py

# docs.aws.amazon.com/lambda/latest/dg/python-context.html
PYTHON_CONTEXT = {
    "function_name",
    "function_version",
    "invoked_function_arn",
    "memory_limit_in_mb",
    "aws_request_id",
    "log_group_name",
    "log_stream_name",
    "identity",
    "client_context",
}
PYTHON_CONTEXT_METHODS = {"get_remaining_time_in_millis"}
# docs.aws.amazon.com/lambda/latest/dg/nodejs-context.html
NODE_CONTEXT = {
    "functionName",
    "functionVersion",
    "invokedFunctionArn",
    "memoryLimitInMB",
    "awsRequestId",
    "logGroupName",
    "logStreamName",
    "identity",
    "clientContext",
    "callbackWaitsForEmptyEventLoop",
}
NODE_CONTEXT_METHODS = {"getRemainingTimeInMillis", "done", "succeed", "fail"}
# docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html#configuration-envvars-runtime
LAMBDA_VARIABLES = {
    "_HANDLER",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
    "TZ",
}

# AWS's Python example (python-context.html), plus the environment and a data file read at import.
PY_CONTEXT_HANDLER = """\
import json
import os

CONFIG = json.load(open("data.json"))  # relative to the code's directory, as on Lambda


def lambda_handler(event, context):
    print("Lambda function ARN:", context.invoked_function_arn)
    print("CloudWatch log stream name:", context.log_stream_name)
    print("CloudWatch log group name:",  context.log_group_name)
    print("Lambda Request ID:", context.aws_request_id)
    print("Lambda function memory limits in MB:", context.memory_limit_in_mb)
    print("Lambda time remaining in MS:", context.get_remaining_time_in_millis())
    names = [n for n in dir(context) if not n.startswith("_")]
    return {
        "names": names,
        "attributes": {n: getattr(context, n) for n in names if n != "identity" and not callable(getattr(context, n))},
        "identity": [context.identity.cognito_identity_id, context.identity.cognito_identity_pool_id],
        "methods": [n for n in names if callable(getattr(context, n))],
        "remaining": context.get_remaining_time_in_millis(),
        "env": dict(os.environ),
        "cwd": os.getcwd(),
        "config": CONFIG,
    }
"""


def aws_client(server: HearthServer) -> Any:
    return boto3.client(
        "lambda",
        endpoint_url=server.base_url,
        region_name="us-east-1",
        aws_access_key_id="hearth",
        aws_secret_access_key=server.api_key,
    )


def deploy(server: HearthServer, name: str, runtime: str, files: dict[str, str], handler: str, **settings: Any) -> None:
    body = {"name": name, "runtime": runtime, "handler": handler, "zip_base64": b64_zip(files), **settings}
    response = server.client.post("/api/functions", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["runtime"] == runtime


def record(server: HearthServer, invocation_id: str) -> dict[str, Any]:
    """The invocation's record with its logs (written behind the request: wait for it)."""
    deadline = time.monotonic() + 30
    while True:
        response = server.client.get(f"/api/invocations/{invocation_id}")
        if response.status_code == 200 or time.monotonic() > deadline:
            assert response.status_code == 200, response.text
            return response.json()  # type: ignore[no-any-return]
        time.sleep(0.2)


def available(server: HearthServer) -> list[str]:
    return [r["name"] for r in server.client.get("/api/runtimes").json()["runtimes"] if "docker" in r["backends"]]


# ----------------------------------------------------------------------------------- context and env


@pytest.mark.parametrize("runtime", PYTHON_RUNTIMES)
def test_python_context_environment_and_cwd(hearth: HearthServer, fname: str, runtime: str) -> None:
    files = {"lambda_function.py": PY_CONTEXT_HANDLER, "data.json": '{"from": "file"}'}
    deploy(hearth, fname, runtime, files, "lambda_function.lambda_handler", env={"MINE": "1", "TZ": "Europe/Paris"})
    response = hearth.invoke(fname, {"k": 1})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body["attributes"]) | {"identity", "client_context"} >= PYTHON_CONTEXT
    assert set(body["methods"]) >= PYTHON_CONTEXT_METHODS
    attributes = body["attributes"]
    assert attributes["function_name"] == fname and attributes["function_version"] == "1"
    assert attributes["memory_limit_in_mb"] == "128"  # awslambdaric reads it from the environment: a string
    assert attributes["aws_request_id"] == response.headers["X-Hearth-Invocation-Id"]
    assert attributes["invoked_function_arn"] == f"arn:aws:lambda:us-east-1:000000000000:function:{fname}"
    assert attributes["log_group_name"] == f"/aws/lambda/{fname}"
    assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/\[1\]\w+", attributes["log_stream_name"])
    assert attributes["client_context"] is None and body["identity"] == [None, None]
    assert 0 < body["remaining"] <= 30_000

    env = body["env"]
    assert set(env) >= LAMBDA_VARIABLES, LAMBDA_VARIABLES - set(env)
    assert env["AWS_EXECUTION_ENV"] == f"AWS_Lambda_{runtime}"
    assert env["_HANDLER"] == "lambda_function.lambda_handler"
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["LAMBDA_TASK_ROOT"] == body["cwd"]
    assert (env["MINE"], env["TZ"]) == ("1", "Europe/Paris")  # TZ is not reserved: the function's value wins
    assert body["config"] == {"from": "file"}


JS_CONTEXT_HANDLER = """\
const fs = require('fs');
const config = JSON.parse(fs.readFileSync('data.json', 'utf8'));

exports.handler = async function (event, context) {
  console.log('Remaining time: ', context.getRemainingTimeInMillis());
  console.log('Function name: ', context.functionName);
  const properties = {};
  for (const name of Object.keys(context)) {
    const value = context[name];
    properties[name] = typeof value === 'function' ? 'function' : value === undefined ? 'undefined' : value;
  }
  return { properties, env: process.env, cwd: process.cwd(), config };
};
"""


@pytest.mark.parametrize("runtime", NODE_RUNTIMES)
def test_node_context_environment_and_cwd(hearth: HearthServer, fname: str, runtime: str) -> None:
    files = {"index.js": JS_CONTEXT_HANDLER, "data.json": '{"from": "file"}'}
    deploy(hearth, fname, runtime, files, "index.handler", env={"TZ": "Asia/Tokyo", "AWS_REGION": "xx-east-9"})
    response = hearth.invoke(fname, {"k": 1})
    assert response.status_code == 200, response.text
    body = response.json()
    properties = body["properties"]
    assert set(properties) >= NODE_CONTEXT, NODE_CONTEXT - set(properties)
    assert all(properties[name] == "function" for name in NODE_CONTEXT_METHODS)
    assert properties["functionName"] == fname and properties["functionVersion"] == "1"
    assert properties["memoryLimitInMB"] == "128"
    assert properties["awsRequestId"] == response.headers["X-Hearth-Invocation-Id"]
    assert properties["invokedFunctionArn"] == f"arn:aws:lambda:us-east-1:000000000000:function:{fname}"
    assert properties["logGroupName"] == f"/aws/lambda/{fname}"
    assert properties["callbackWaitsForEmptyEventLoop"] is True
    assert properties["identity"] == properties["clientContext"] == "undefined"
    env = body["env"]
    assert set(env) >= LAMBDA_VARIABLES, LAMBDA_VARIABLES - set(env)
    assert env["AWS_EXECUTION_ENV"] == f"AWS_Lambda_{runtime}" and env["_HANDLER"] == "index.handler"
    assert env["AWS_REGION"] == "us-east-1"  # reserved: Lambda's value, not the function's
    assert env["TZ"] == "Asia/Tokyo"
    assert env["LAMBDA_TASK_ROOT"] == body["cwd"] and body["config"] == {"from": "file"}
    node_major = runtime.removeprefix("nodejs").removesuffix(".x")
    assert hearth.client.get(f"/api/functions/{fname}").json()["runtime"] == runtime
    version = hearth.deploy(
        fname + "-v", "exports.handler = async () => process.version;", "javascript", runtime=runtime
    )
    assert version["runtime"] == runtime
    assert hearth.invoke(fname + "-v").json().startswith(f"v{node_major}.")


# ------------------------------------------------------------------------------ Node: module shapes

# AWS's ES module example (nodejs-handler.html), with top-level await as its docs show for .mjs handlers.
ESM_HANDLER = """\
const greeting = await Promise.resolve('Hello from an ES module');

export const handler = async (event) => {
  const response = { statusCode: 200, body: JSON.stringify(greeting + ' ' + event.name) };
  return response;
};
"""


@pytest.mark.parametrize("runtime", NODE_RUNTIMES)
def test_node_es_modules_and_commonjs_as_lambda_resolves_them(hearth: HearthServer, fname: str, runtime: str) -> None:
    cases = {
        "mjs": ({"index.mjs": ESM_HANDLER}, "index.handler"),
        "typemodule": ({"app.js": ESM_HANDLER, "package.json": '{"type": "module"}'}, "app.handler"),
        "cjs": (
            {"app.cjs": "exports.handler = async (e) => ({ statusCode: 200, body: JSON.stringify('cjs ' + e.name) });"},
            "app.handler",
        ),
    }
    for suffix, (files, handler) in cases.items():
        deploy(hearth, f"{fname}-{suffix}", runtime, files, handler)
        response = hearth.invoke(f"{fname}-{suffix}", {"name": "x"})
        assert response.status_code == 200, (suffix, response.text)
        expected = "cjs x" if suffix == "cjs" else "Hello from an ES module x"
        assert json.loads(response.json()["body"]) == expected, suffix


def test_node_callback_handlers_and_legacy_context_methods(hearth: HearthServer, fname: str) -> None:
    runtime = catalog.default_runtime("javascript")
    cases = {
        "callback": (
            "exports.handler = function (event, context, callback) { callback(null, { got: event }); };",
            {"got": 7},
        ),
        "later": ("exports.handler = (e, c, cb) => { setTimeout(() => cb(null, 'later'), 20); };", "later"),
        "succeed": ("exports.handler = function (event, context) { context.succeed('succeeded'); };", "succeeded"),
        "done": ("exports.handler = function (event, context) { context.done(null, 'done'); };", "done"),
    }
    for suffix, (code, expected) in cases.items():
        deploy(hearth, f"{fname}-{suffix}", runtime, {"index.js": code}, "index.handler")
        response = hearth.invoke(f"{fname}-{suffix}", 7)
        assert response.status_code == 200 and response.json() == expected, (suffix, response.text)
    fail = "exports.handler = function (event, context) { context.fail(new Error('failed')); };"
    deploy(hearth, f"{fname}-fail", runtime, {"index.js": fail}, "index.handler")
    failed = hearth.invoke(f"{fname}-fail")
    assert failed.status_code == 500 and failed.json()["error"]["message"] == "failed"
    error_cb = "exports.handler = (e, c, cb) => cb(new TypeError('bad input'));"
    deploy(hearth, f"{fname}-cberr", runtime, {"index.js": error_cb}, "index.handler")
    assert hearth.invoke(f"{fname}-cberr").json()["error"]["type"] == "TypeError"


# -------------------------------------------------------------------------------------- logs, errors

# AWS's logging example (python-logging.html): the root logger, level set by the function.
PY_LOGGING_HANDLER = """\
import logging

logger = logging.getLogger()
logger.setLevel("INFO")


def lambda_handler(event, context):
    logger.info("Processing %s", event["n"])
    logger.debug("not shown: below INFO")
    if event.get("fail"):
        raise ValueError("asked to fail")
    return "ok"
"""
LOG_LINE = r"\[INFO\]\t\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\t%s\tProcessing 1\n"


def test_python_logging_and_unhandled_error_as_lambda_writes_them(hearth: HearthServer, fname: str) -> None:
    deploy(hearth, fname, catalog.default_runtime("python"), {"app.py": PY_LOGGING_HANDLER}, "app.lambda_handler")
    ok = hearth.invoke(fname, {"n": 1})
    invocation_id = ok.headers["X-Hearth-Invocation-Id"]
    stdout = record(hearth, invocation_id)["stdout"]
    assert re.search(LOG_LINE % invocation_id, stdout), stdout
    assert "not shown" not in stdout

    failed = hearth.invoke(fname, {"n": 1, "fail": True})
    assert failed.status_code == 500 and failed.json()["error"]["type"] == "ValueError"
    logged = record(hearth, failed.headers["X-Hearth-Invocation-Id"])["stdout"]
    assert "[ERROR] ValueError: asked to fail\nTraceback (most recent call last):\n" in logged, logged
    assert 'File "/hearth/code/app.py", line 11, in lambda_handler' in logged.replace("\u00a0", " ")

    aws = aws_client(hearth)
    response = aws.invoke(FunctionName=fname, Payload=json.dumps({"n": 1, "fail": True}), LogType="Tail")
    assert response["FunctionError"] == "Unhandled"
    payload = json.loads(response["Payload"].read())
    assert (payload["errorType"], payload["errorMessage"]) == ("ValueError", "asked to fail")
    assert payload["stackTrace"] and 'app.py", line 11, in lambda_handler' in payload["stackTrace"][-1]
    tail = base64.b64decode(response["LogResult"]).decode()
    assert re.search(LOG_LINE % payload["requestId"], tail), tail
    assert "[ERROR] ValueError: asked to fail" in tail and "Traceback (most recent call last):" in tail


def test_aws_lambda_log_level_is_respected(hearth: HearthServer, fname: str) -> None:
    code = "import logging\n\ndef handler(event, context):\n    logging.getLogger().debug('debugging')\n    return 1\n"
    deploy(
        hearth,
        fname,
        catalog.default_runtime("python"),
        {"app.py": code},
        "app.handler",
        env={"AWS_LAMBDA_LOG_LEVEL": "DEBUG"},
    )
    stdout = record(hearth, hearth.invoke(fname).headers["X-Hearth-Invocation-Id"])["stdout"]
    assert re.search(r"^\[DEBUG\]\t\S+Z\t\S+\tdebugging$", stdout, re.M), stdout
    js = "exports.handler = async () => { console.debug('dbg'); console.info('inf'); console.error('err'); return 1; };"
    deploy(
        hearth,
        fname + "-js",
        catalog.default_runtime("javascript"),
        {"index.js": js},
        "index.handler",
        env={"AWS_LAMBDA_LOG_LEVEL": "INFO"},
    )
    stdout = record(hearth, hearth.invoke(fname + "-js").headers["X-Hearth-Invocation-Id"])["stdout"]
    assert "dbg" not in stdout and "\tINFO\tinf\n" in stdout and "\tERROR\terr\n" in stdout


def test_node_console_lines_and_invoke_error_as_lambda_writes_them(hearth: HearthServer, fname: str) -> None:
    code = (
        "exports.handler = async (event) => {\n"
        "  console.log('got', event);\n"
        "  console.warn('careful');\n"
        "  if (event.fail) throw new RangeError('too far');\n"
        "  return 1;\n"
        "};\n"
    )
    deploy(hearth, fname, catalog.default_runtime("javascript"), {"index.js": code}, "index.handler")
    ok = hearth.invoke(fname, {"n": 1})
    invocation_id = ok.headers["X-Hearth-Invocation-Id"]
    stdout = record(hearth, invocation_id)["stdout"]
    time_re = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert re.search(rf"^{time_re}\t{invocation_id}\tINFO\tgot {{ n: 1 }}$", stdout, re.M), stdout
    assert re.search(rf"^{time_re}\t{invocation_id}\tWARN\tcareful$", stdout, re.M), stdout

    aws = aws_client(hearth)
    response = aws.invoke(FunctionName=fname, Payload=b'{"fail": true}', LogType="Tail")
    payload = json.loads(response["Payload"].read())
    # Node's runtime answers {errorType, errorMessage, trace} (Errors.js toRapidResponse)
    assert (payload["errorType"], payload["errorMessage"]) == ("RangeError", "too far")
    assert payload["trace"][0] == "RangeError: too far" and "/hearth/code/index.js" in payload["trace"][1]
    tail = base64.b64decode(response["LogResult"]).decode()
    logged = re.search(r"\tERROR\tInvoke Error \t(\{.*\})\n", tail)
    assert logged, tail
    assert json.loads(logged.group(1))["errorType"] == "RangeError"


PY_LOAD_FAILURES = {
    "import": (
        "import no_such_module\n\ndef handler(e, c):\n    return 1\n",
        "Runtime.ImportModuleError",
        "Unable to import module 'app': No module named 'no_such_module'",
    ),
    "handler": (
        "def other(e, c):\n    return 1\n",
        "Runtime.HandlerNotFound",
        "Handler 'handler' missing on module 'app'",
    ),
    "syntax": ("def handler(e, c)\n    return 1\n", "Runtime.UserCodeSyntaxError", "Syntax error in module 'app'"),
    # An exception the module's own code raises at import is reported as what it is.
    "raises": (
        "open('missing.json')\n\ndef handler(e, c):\n    return 1\n",
        "FileNotFoundError",
        "[Errno 2] No such file or directory: 'missing.json'",
    ),
}


@pytest.mark.parametrize("case", sorted(PY_LOAD_FAILURES))
def test_python_load_failures_are_named_as_lambda_names_them(hearth: HearthServer, fname: str, case: str) -> None:
    code, error_type, message = PY_LOAD_FAILURES[case]
    deploy(hearth, fname, catalog.default_runtime("python"), {"app.py": code}, "app.handler")
    response = hearth.invoke(fname)
    assert response.status_code == 500
    error = response.json()["error"]
    assert (error["type"], error["phase"]) == (error_type, "init"), error
    assert error["message"].startswith(message), error
    logged = record(hearth, response.headers["X-Hearth-Invocation-Id"])["stdout"]
    assert f"[ERROR] {error_type}: {message}" in logged, logged
    if case == "raises":
        assert 'app.py", line 1, in <module>' in logged.replace("\u00a0", " ")
    payload = json.loads(aws_client(hearth).invoke(FunctionName=fname)["Payload"].read())
    assert payload["errorType"] == error_type


JS_LOAD_FAILURES = {
    "import": (
        "const x = require('no-such-package');\nexports.handler = async () => 1;\n",
        "Runtime.ImportModuleError",
        "Error: Cannot find module 'no-such-package'",
    ),
    "handler": (
        "exports.other = async () => 1;\n",
        "Runtime.HandlerNotFound",
        "index.handler is undefined or not exported",
    ),
    "syntax": ("exports.handler = async ( => 1;\n", "Runtime.UserCodeSyntaxError", "SyntaxError: "),
    "raises": ("throw new TypeError('bad config');\n", "TypeError", "bad config"),
}


@pytest.mark.parametrize("case", sorted(JS_LOAD_FAILURES))
def test_node_load_failures_are_named_as_lambda_names_them(hearth: HearthServer, fname: str, case: str) -> None:
    code, error_type, message = JS_LOAD_FAILURES[case]
    deploy(hearth, fname, catalog.default_runtime("javascript"), {"index.js": code}, "index.handler")
    response = hearth.invoke(fname)
    assert response.status_code == 500
    error = response.json()["error"]
    assert (error["type"], error["phase"]) == (error_type, "init"), error
    assert error["message"].startswith(message), error


# ------------------------------------------------------------------------------------------ runtimes


def test_runtimes_are_listed_and_an_unavailable_one_is_refused(hearth: HearthServer, fname: str) -> None:
    listed = {r["name"]: r for r in hearth.client.get("/api/runtimes").json()["runtimes"]}
    assert {"python3.11", "python3.13", "nodejs18.x", "nodejs20.x"} <= set(listed)
    offered = available(hearth)
    assert set(offered) == set(catalog.RUNTIMES)  # every image is built on this host (conftest)
    assert sum(r["default"] for r in listed.values()) == 3  # one per language: python, javascript, provided
    assert listed["provided"]["aliases"] == ["provided.al2023", "provided.al2"]
    assert "docker" in listed["provided"]["backends"]  # and gvisor where it runs; never the microVM backends
    assert not {"microvm", "firecracker"} & set(listed["provided"]["backends"])
    assert hearth.client.get("/api/backends/docker").json()["runtimes"] == list(catalog.RUNTIMES)

    refused = hearth.client.post("/api/functions", json={"name": fname, "runtime": "python3.9", "code": "x = 1"})
    assert refused.status_code == 422
    assert "python3.9" in refused.text and all(name in refused.text for name in catalog.RUNTIMES), refused.text
    mismatch = hearth.client.post(
        "/api/functions", json={"name": fname, "language": "javascript", "runtime": "python3.13", "code": "x = 1"}
    )
    assert mismatch.status_code == 422 and "not a javascript runtime" in mismatch.text

    aws = aws_client(hearth)
    with pytest.raises(ClientError) as unknown:
        aws.create_function(
            FunctionName=fname,
            Runtime="python3.9",
            Role="r",
            Handler="lambda_function.lambda_handler",
            Code={"ZipFile": zipped({"lambda_function.py": "def lambda_handler(e, c):\n    return 1\n"})},
        )
    assert unknown.value.response["Error"]["Code"] == "InvalidParameterValueException"
    message = unknown.value.response["Error"]["Message"]
    assert "python3.9" in message and all(name in message for name in catalog.RUNTIMES), message
    with pytest.raises(ClientError) as reserved:
        aws.create_function(
            FunctionName=fname,
            Runtime="python3.13",
            Role="r",
            Handler="lambda_function.lambda_handler",
            Code={"ZipFile": zipped({"lambda_function.py": "def lambda_handler(e, c):\n    return 1\n"})},
            Environment={"Variables": {"AWS_REGION": "xx-east-9"}},
        )
    assert "Reserved keys used in this request: AWS_REGION" in reserved.value.response["Error"]["Message"]


@pytest.mark.parametrize("runtime", AGENT_RUNTIMES)
def test_boto3_create_function_runs_and_reports_the_runtime_it_names(
    hearth: HearthServer, fname: str, runtime: str
) -> None:
    aws = aws_client(hearth)
    if runtime.startswith("python"):
        source = "import sys\n\ndef lambda_handler(event, context):\n    return '%d.%d' % sys.version_info[:2]\n"
        code = {"lambda_function.py": source}
        handler, expected = "lambda_function.lambda_handler", runtime.removeprefix("python")
    else:
        code = {"index.mjs": "export const handler = async () => process.versions.node.split('.')[0];\n"}
        handler, expected = "index.handler", runtime.removeprefix("nodejs").removesuffix(".x")
    created = aws.create_function(
        FunctionName=fname, Runtime=runtime, Role="r", Handler=handler, Code={"ZipFile": zipped(code)}
    )
    assert created["Runtime"] == runtime
    assert aws.get_function(FunctionName=fname)["Configuration"]["Runtime"] == runtime
    assert aws.get_function_configuration(FunctionName=fname)["Runtime"] == runtime
    assert json.loads(aws.invoke(FunctionName=fname)["Payload"].read()) == expected
    other = next(r for r in catalog.RUNTIMES if r != runtime and catalog.language_of(r) == catalog.language_of(runtime))
    updated = aws.update_function_configuration(FunctionName=fname, Runtime=other)
    assert updated["Runtime"] == other
    other_expected = other.removeprefix("python").removeprefix("nodejs").removesuffix(".x")
    assert json.loads(aws.invoke(FunctionName=fname)["Payload"].read()) == other_expected


# ------------------------------------------------------------------------------------------- AWS SDKs


@pytest.mark.parametrize("runtime", PYTHON_RUNTIMES)
def test_python_runtimes_ship_boto3(hearth: HearthServer, fname: str, runtime: str) -> None:
    code = (
        "import boto3\n"
        "\n"
        "s3 = boto3.client('s3', region_name='us-east-1')\n"
        "\n"
        "def handler(event, context):\n"
        "    return [boto3.__version__, s3.meta.region_name]\n"
    )
    deploy(hearth, fname, runtime, {"app.py": code}, "app.handler")
    response = hearth.invoke(fname)
    assert response.status_code == 200, response.text
    assert response.json()[1] == "us-east-1" and response.json()[0].startswith("1.")


@pytest.fixture(scope="module")
def aws_sdk_layer(docker_client: Any) -> None:
    from hearth.images import aws_sdk

    try:  # installed by `make images`; built here when missing (npm needs the registry)
        aws_sdk.ensure_layer(docker_client, lambda line: print(line, flush=True))
    except aws_sdk.SdkBuildError as exc:
        pytest.skip(f"the AWS SDK for JavaScript could not be installed here: {exc}")


@pytest.mark.parametrize("runtime", NODE_RUNTIMES)
def test_node_runtimes_ship_the_aws_sdk_v3(hearth: HearthServer, fname: str, runtime: str, aws_sdk_layer: None) -> None:
    esm = (
        "import { S3Client } from '@aws-sdk/client-s3';\n"
        "import { DynamoDBClient } from '@aws-sdk/client-dynamodb';\n"
        "import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';\n"
        "const s3 = new S3Client({ region: 'us-east-1' });\n"
        "const doc = DynamoDBDocumentClient.from(new DynamoDBClient({ region: 'us-east-1' }));\n"
        "export const handler = async () => [typeof s3.send, typeof doc.send];\n"
    )
    deploy(hearth, fname, runtime, {"index.mjs": esm}, "index.handler")
    response = hearth.invoke(fname)
    assert response.status_code == 200, response.text
    assert response.json() == ["function", "function"]
    cjs = (
        "const { SQSClient } = require('@aws-sdk/client-sqs');\n"
        "const { SNSClient } = require('@aws-sdk/client-sns');\n"
        "const { LambdaClient } = require('@aws-sdk/client-lambda');\n"
        "exports.handler = async () => [SQSClient, SNSClient, LambdaClient].map((c) => typeof c);\n"
    )
    deploy(hearth, fname + "-cjs", runtime, {"index.js": cjs}, "index.handler")
    response = hearth.invoke(fname + "-cjs")
    assert response.status_code == 200, response.text
    assert response.json() == ["function"] * 3


def test_what_the_code_prints_while_loading_opens_the_first_calls_log(hearth: HearthServer, fname: str) -> None:
    code = "print('loading config')\n\ndef handler(event, context):\n    print('handling')\n    return 1\n"
    deploy(hearth, fname, catalog.default_runtime("python"), {"app.py": code}, "app.handler")
    first = record(hearth, hearth.invoke(fname).headers["X-Hearth-Invocation-Id"])["stdout"]
    assert first == "loading config\nhandling\n", first
    second = record(hearth, hearth.invoke(fname).headers["X-Hearth-Invocation-Id"])["stdout"]
    assert second == "handling\n", second


def test_the_microvm_guest_refuses_runtimes_it_does_not_hold(
    hearth: HearthServer, fname: str, backend_availability: dict[str, tuple[bool, str]]
) -> None:
    if not backend_availability["microvm"][0]:
        pytest.skip(f"microvm backend not available here: {backend_availability['microvm'][1]}")
    runs = [catalog.default_runtime(language) for language in catalog.LANGUAGES]
    for runtime in (r for r in AGENT_RUNTIMES if r not in runs):
        body = {"name": fname, "runtime": runtime, "backend": "microvm", "code": "def handler(e, c):\n    return 1\n"}
        if runtime.startswith("nodejs"):
            body["code"] = "exports.handler = async () => 1;"
        refused = hearth.client.post("/api/functions", json=body)
        assert refused.status_code == 422, refused.text
        assert runtime in refused.text and all(name in refused.text for name in runs), refused.text
    # Custom runtimes run on the container backends only: the refusal names those that run them.
    body = {"name": fname, "runtime": "provided", "backend": "microvm", "code": "#!/bin/sh\n"}
    refused = hearth.client.post("/api/functions", json=body)
    assert refused.status_code == 422, refused.text
    assert "microvm" in refused.text and "docker, gvisor" in refused.text, refused.text
    microvm = hearth.client.get("/api/backends/microvm").json()
    assert microvm["runtimes"] == runs


def test_a_non_default_runtime_gets_stem_cells_once_used(hearth: HearthServer, fname: str) -> None:
    runtime = next(r for r in PYTHON_RUNTIMES if r != catalog.default_runtime("python"))
    code = "def handler(event, context):\n    return 1\n"
    hearth.deploy(fname, code, runtime=runtime)
    assert hearth.invoke(fname).status_code == 200

    def ready() -> int:
        return int(hearth.client.get("/readyz").json()["stem_cells"].get(f"docker/{runtime}", 0))

    deadline = time.monotonic() + 60
    while ready() < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ready() == 1
    hearth.deploy(fname + "-2", code, runtime=runtime)
    second = hearth.invoke(fname + "-2")
    assert second.status_code == 200 and second.headers["X-Hearth-Path"] == "stem"


def test_dependency_layers_are_built_for_the_functions_runtime(hearth: HearthServer, fname: str) -> None:
    # markupsafe ships a compiled extension per CPython version: it imports only from the right wheel.
    code = "import markupsafe._speedups as speedups\n\ndef handler(event, context):\n    return speedups.__file__\n"
    layers = {}
    for runtime in PYTHON_RUNTIMES:
        files = {"app.py": code, "requirements.txt": "markupsafe==3.0.2\n"}
        deploy(hearth, f"{fname}-{runtime[-2:]}", runtime, files, "app.handler")
        fn = hearth.client.get(f"/api/functions/{fname}-{runtime[-2:]}").json()
        layers[runtime] = fn["layer"]
        response = hearth.invoke(f"{fname}-{runtime[-2:]}")
        assert response.status_code == 200, response.text
        assert f"cpython-{runtime.removeprefix('python').replace('.', '')}" in response.json(), response.text
    assert len(set(layers.values())) == len(PYTHON_RUNTIMES)  # one requirements list, one layer per runtime
