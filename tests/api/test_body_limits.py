"""Request bodies are read under their cap by one reader, and refused once over it, whether the size
is declared (Content-Length) or only seen as the body streams in (chunked): the API's invoke and the
HTTP trigger (HEARTH_MAX_REQUEST_BYTES), code uploads (HEARTH_MAX_ZIP_BYTES) and the Lambda API
(its largest call: a base64 zip in JSON), each in its own error format."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hearth.testing import HearthServer

ECHO = "def handler(event, context):\n    return len(str(event))\n"
MAX_REQUEST = 2000
MAX_ZIP = 3000
LAMBDA_LIMIT = MAX_ZIP * 4 // 3 + 64 * 1024  # hearth.api.lambda_api.auth.body_limit


@pytest.fixture(scope="module")
def small_limits(tmp_path_factory: pytest.TempPathFactory, runtime_images: dict[str, str]) -> Iterator[HearthServer]:
    env = {"HEARTH_MAX_REQUEST_BYTES": str(MAX_REQUEST), "HEARTH_MAX_ZIP_BYTES": str(MAX_ZIP)}
    server = HearthServer(Path(tmp_path_factory.mktemp("limits")) / "data", env=env)
    server.start()
    server.deploy("echo", ECHO)
    yield server
    server.stop()


def streamed(size: int) -> Iterator[bytes]:
    """`size` bytes with no Content-Length: httpx sends them chunked."""
    for _ in range(size // 500):
        yield b"x" * 500
    yield b"x" * (size % 500)


def json_of(size: int) -> bytes:
    """A JSON string of exactly `size` bytes."""
    return b'"' + b"a" * (size - 2) + b'"'


@pytest.mark.parametrize("path", ["/api/functions/echo/invoke", "/fn/echo"])
def test_an_invocation_body_over_the_limit_is_refused_as_declared_or_as_streamed(
    small_limits: HearthServer, path: str
) -> None:
    at_limit = small_limits.client.post(path, content=json_of(MAX_REQUEST))
    assert at_limit.status_code == 200, at_limit.text
    for body in (json_of(MAX_REQUEST + 1), streamed(MAX_REQUEST + 1)):
        response = small_limits.client.post(path, content=body)
        assert response.status_code == 413, response.text
        assert response.json()["error"] == {
            "type": "PayloadTooLarge",
            "message": f"request body over the limit of {MAX_REQUEST} bytes",
        }


def test_a_zip_upload_over_the_limit_is_refused_as_declared_or_as_streamed(small_limits: HearthServer) -> None:
    for body in (b"z" * (MAX_ZIP + 1), streamed(MAX_ZIP + 1)):
        response = small_limits.client.put(
            "/api/functions/echo/code", content=body, headers={"Content-Type": "application/zip"}
        )
        assert response.status_code == 413, response.text
        assert response.json()["error"]["message"] == f"the zip is over the limit of {MAX_ZIP} bytes"


def test_a_lambda_call_over_the_largest_body_is_refused_as_declared_or_as_streamed(small_limits: HearthServer) -> None:
    url = f"{small_limits.base_url}/2015-03-31/functions/echo/invocations"
    headers = {"Authorization": f"Bearer {small_limits.api_key}"}
    for body in (b"x" * (LAMBDA_LIMIT + 1), streamed(LAMBDA_LIMIT + 1)):
        response = httpx.post(url, content=body, headers=headers, timeout=30)
        assert response.status_code == 413, response.text
        assert response.headers["x-amzn-ErrorType"] == "RequestTooLargeException"
        assert response.json()["message"] == f"Request must be smaller than {LAMBDA_LIMIT} bytes"
