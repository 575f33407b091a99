"""Every endpoint fuzzed from the served OpenAPI schema: no crash, no hang, no 5xx but a function's own."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings

from hearth.testing import HearthServer

EXAMPLES_PER_OPERATION = 20


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
    where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:400]}"
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
    tested = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def fuzz(case: schemathesis.Case) -> None:
            check_response(case, case.call(headers=headers, timeout=60))

        fuzz()
        tested += 1
    assert tested >= 10  # every operation of the schema was exercised
