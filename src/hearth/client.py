"""A small client of Hearth's HTTP API (what the `hearth` command uses).

Configured by `HEARTH_API_URL` (default `http://127.0.0.1:8000`) and `HEARTH_API_KEY` (default: the
key a local server generated in `$HEARTH_DATA_DIR/api_key`, `.hearth/api_key` by default).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
# A deploy waits for its dependency build: allow as long as the server's build limit, and some.
DEPLOY_TIMEOUT = httpx.Timeout(30.0, read=900.0)


class HearthError(Exception):
    """Hearth answered with an error (or could not be reached); `message` is what a user should read."""

    def __init__(self, message: str, *, status: int | None = None, error_type: str | None = None, body: Any = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_type = error_type
        self.body = body


def configured_key() -> str | None:
    key = os.environ.get("HEARTH_API_KEY")
    if key:
        return key
    path = Path(os.environ.get("HEARTH_DATA_DIR", ".hearth")).expanduser() / "api_key"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def error_of(response: httpx.Response) -> HearthError:
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        error_type = str(error.get("type") or "Error")
        message = str(error.get("message") or response.reason_phrase)
    else:
        error_type, message = f"HTTP{response.status_code}", response.text[:300] or response.reason_phrase
    return HearthError(message, status=response.status_code, error_type=error_type, body=body)


def parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


class HearthClient:
    def __init__(self, url: str | None = None, api_key: str | None = None, timeout: float = 60.0) -> None:
        self.url = (url or os.environ.get("HEARTH_API_URL") or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else configured_key()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> HearthClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ----- plumbing
    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise HearthError(f"Hearth at {self.url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise HearthError(f"cannot reach Hearth at {self.url} ({exc}); is it running? (`hearth up`)") from None
        if response.status_code >= 400:
            raise error_of(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    # ----- functions
    def list_functions(self) -> list[dict[str, Any]]:
        return list(self.json("GET", "/api/functions")["functions"])

    def get_function(self, name: str) -> dict[str, Any]:
        return dict(self.json("GET", f"/api/functions/{name}"))

    def exists(self, name: str) -> bool:
        try:
            self.request("GET", f"/api/functions/{name}")
        except HearthError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def deploy(self, settings: dict[str, Any], *, create: bool) -> dict[str, Any]:
        """Create (POST) or fully replace (PUT) a function; waits for its dependency build."""
        if create:
            return dict(self.json("POST", "/api/functions", json=settings, timeout=DEPLOY_TIMEOUT))
        body = {k: v for k, v in settings.items() if k != "name"}
        return dict(self.json("PUT", f"/api/functions/{settings['name']}", json=body, timeout=DEPLOY_TIMEOUT))

    def delete(self, name: str) -> None:
        self.request("DELETE", f"/api/functions/{name}")

    def invoke(self, name: str, event: bytes, *, mode: str | None = None) -> httpx.Response:
        """The raw response: a function's failure is an HTTP error with a JSON body, not an exception here."""
        params = {"mode": mode} if mode else None
        try:
            return self.http.post(
                f"/api/functions/{name}/invoke",
                content=event,
                params=params,
                headers={"content-type": "application/json"},
                timeout=DEPLOY_TIMEOUT,
            )
        except httpx.HTTPError as exc:
            raise HearthError(f"cannot reach Hearth at {self.url} ({exc}); is it running? (`hearth up`)") from None

    # ----- builds
    def builds(self, name: str, limit: int = 20) -> list[dict[str, Any]]:
        return list(self.json("GET", f"/api/functions/{name}/builds", params={"limit": limit})["builds"])

    def build(self, name: str, build_id: str, log_offset: int = 0) -> dict[str, Any]:
        return dict(self.json("GET", f"/api/functions/{name}/builds/{build_id}", params={"log_offset": log_offset}))

    # ----- logs and metrics (docs/api.md, "Metrics and logs")
    def logs(self, name: str, *, since: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if since:
            params["since"] = since
        return list(self.json("GET", f"/api/functions/{name}/logs", params=params)["lines"])

    def follow_logs(self, name: str) -> Iterator[dict[str, Any]]:
        """Server-Sent Events of `/logs/stream`: one dict per `log` event, until the server closes."""
        try:
            with self.http.stream(
                "GET", f"/api/functions/{name}/logs/stream", timeout=httpx.Timeout(30.0, read=None)
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_of(response)
                event, data = "message", []
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line:
                        line_object = parse_json("\n".join(data)) if data and event == "log" else None
                        if isinstance(line_object, dict):
                            yield line_object
                        event, data = "message", []
        except httpx.HTTPError as exc:
            raise HearthError(f"lost the log stream from {self.url} ({exc})") from None

    def metrics_summary(self, window: str = "5m") -> dict[str, Any]:
        return dict(self.json("GET", "/api/metrics/summary", params={"window": window}))
