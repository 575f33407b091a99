"""Every endpoint fuzzed from the served OpenAPI schema: no crash, no hang, no 5xx but a function's own."""

from __future__ import annotations

from collections import Counter, defaultdict

import schemathesis
from hypothesis import HealthCheck, given, settings

from hearth.testing import HearthServer

EXAMPLES_PER_OPERATION = 20
# Answers to any input with the admin key: success, or a client error that says what was wrong; 5xx only as
# the invoked function's own failure (check_response).
EXPECTED_STATUSES = {200, 201, 202, 204, 400, 404, 405, 409, 413, 415, 422, 429, 500, 502, 504}
ALWAYS_SERVED = ("GET /healthz", "GET /readyz", "GET /api/functions", "GET /api/backends", "GET /api/runtimes")


def is_function_failure(body: object) -> bool:
    """A 5xx that reports a failure of the invoked function (documented), not of Hearth itself."""
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return False
    return "invocation_id" in body["error"]


def is_public_trigger_failure(case: schemathesis.Case, response: schemathesis.Response) -> bool:
    """A public HTTP trigger's failure, answered with AWS's body (docs/api.md, "HTTP trigger")."""
    if not case.formatted_path.startswith("/fn/") or response.status_code not in (429, 502, 504):
        return False
    body = response.json()
    return bool(response.headers.get("x-hearth-invocation-id")) and set(body) == {"message"}


def check_response(case: schemathesis.Case, response: schemathesis.Response) -> None:
    text = response.content[:400].decode(errors="replace")  # a function may answer with any bytes
    where = f"{case.method} {case.formatted_path} -> {response.status_code}: {text}"
    if case.method.upper() != "HEAD" and is_public_trigger_failure(case, response):
        return
    if case.method.upper() == "HEAD":  # no body: a 5xx must still be an invocation's (it has an id)
        if response.status_code >= 500:
            assert response.headers.get("x-hearth-invocation-id"), where
        return
    if response.status_code >= 400:
        assert response.headers.get("content-type", [""])[0].startswith("application/json"), where
        body = response.json()
        assert isinstance(body.get("error", {}).get("message"), str), where
    if response.status_code >= 500:
        assert response.status_code in (500, 502, 504) and is_function_failure(response.json()), where


def test_api_answers_every_input_with_a_clear_status(hearth: HearthServer, fname: str) -> None:
    hearth.deploy(fname, "def handler(event, context):\n    return event\n")
    schema = schemathesis.openapi.from_url(f"{hearth.base_url}/openapi.json")
    headers = {"Authorization": f"Bearer {hearth.api_key}"}
    statuses: defaultdict[str, Counter[int]] = defaultdict(Counter)
    for result in schema.get_all_operations():
        operation = result.ok()
        statuses[f"{operation.method.upper()} {operation.path}"] = Counter()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def fuzz(case: schemathesis.Case) -> None:
            response = case.call(headers=headers, timeout=60)
            statuses[f"{case.method.upper()} {case.path}"][response.status_code] += 1
            check_response(case, response)
            # The same input against the function that exists (made-up names only ever meet 404s); not the
            # management calls that change or delete it, which would leave nothing to fuzz after them.
            names = {"name", "path"} & set(case.path_parameters or {})
            changes = case.method.upper() in ("PUT", "PATCH", "DELETE") and not case.path.startswith("/fn/")
            if names and not changes and not case.path.endswith("/stream"):  # a live stream never ends
                case.path_parameters = {**case.path_parameters, **dict.fromkeys(names, fname)}
                response = case.call(headers=headers, timeout=60)
                statuses[f"{case.method.upper()} {case.path} ({fname})"][response.status_code] += 1
                check_response(case, response)

        fuzz()
    answers = {operation: dict(counts) for operation, counts in statuses.items() if counts}
    print(answers)
    assert all(statuses.values()), f"operations never called: {[op for op, n in statuses.items() if not n]}"
    unexpected = {op: codes for op, codes in answers.items() if set(codes) - EXPECTED_STATUSES}
    assert not unexpected, unexpected  # with the admin key: never 401/403, never a 5xx but a function's
    for operation in ALWAYS_SERVED:
        assert answers[operation].get(200), (operation, answers[operation])
    # the existing function was found, read and run with fuzzed input
    for operation in ("GET /api/functions/{name}", "POST /api/functions/{name}/invoke", "POST /fn/{path}"):
        served = {code for code in answers[f"{operation} ({fname})"] if code < 300}
        assert served, (operation, answers[f"{operation} ({fname})"])
