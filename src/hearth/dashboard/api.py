"""Everything the dashboard asks Hearth, in one place (docs/api.md is the contract).

Built on `hearth.client.HearthClient` (the CLI's client); errors become `DashboardError`, which knows
whether the API was unreachable, refused the key, or rejected some fields (422 `fields`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from hearth.client import HearthClient, HearthError


class DashboardError(Exception):
    """A failed API call, with what a person should read."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_type: str | None = None,
        fields: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_type = error_type
        self.fields = fields or {}

    @property
    def unreachable(self) -> bool:
        return self.status is None

    @property
    def unauthorized(self) -> bool:
        return self.status == 401


def _fields_of(error: HearthError) -> dict[str, str]:
    """422 `fields: [{field, message}]` (and 409s, which name the name or the route) as {field: message}."""
    body = error.body if isinstance(error.body, dict) else {}
    detail = body.get("error") if isinstance(body.get("error"), dict) else {}
    out: dict[str, str] = {}
    for item in detail.get("fields") or []:
        if isinstance(item, dict) and item.get("field"):
            name = str(item["field"])
            out[name] = f"{out[name]}; {item.get('message', '')}" if name in out else str(item.get("message", ""))
    if error.status == 409 and not out:
        out["route" if error.message.startswith("route") else "name"] = error.message
    return out


def _converted(error: HearthError, url: str) -> DashboardError:
    if error.status is None:
        message = f"Cannot reach the Hearth API at {url}. Is it running (`make up` / `hearth serve`)? ({error.message})"
    elif error.status == 401:
        message = (
            f"The Hearth API at {url} refused the API key ({error.message}). "
            "Restart Hearth to make the dashboard's key again (<data dir>/dashboard_key), set HEARTH_API_KEY, "
            "or enter a key in the sidebar."
        )
    elif error.status == 403 and error.error_type == "Forbidden":
        message = f"This API key may not do that: {error.message}"
    else:
        message = error.message
    return DashboardError(message, status=error.status, error_type=error.error_type, fields=_fields_of(error))


@dataclass
class InvokeResult:
    """What the test panel shows of one synchronous invocation."""

    status: int
    body: Any
    text: str
    invocation_id: str | None
    duration_ms: float | None
    path: str | None
    cold: bool
    version: int | None
    elapsed_ms: float
    error: dict[str, Any] | None = field(default=None)

    @property
    def ok(self) -> bool:
        return self.status < 400


class HearthApi:
    def __init__(self, url: str, api_key: str | None, timeout: float = 15.0) -> None:
        self.client = HearthClient(url, api_key or "", timeout=timeout)
        self.url = self.client.url

    def close(self) -> None:
        self.client.close()

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            return self.client.json(method, path, **kwargs)
        except HearthError as exc:
            raise _converted(exc, self.url) from None

    # ----- functions
    def functions(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/api/functions")["functions"])

    def function(self, name: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/api/functions/{name}"))

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._deploy(lambda: self.client.deploy(body, create=True))

    def patch(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._json("PATCH", f"/api/functions/{name}", json=body, timeout=httpx.Timeout(30.0, read=900.0)))

    def _deploy(self, call: Any) -> dict[str, Any]:
        try:
            return dict(call())
        except HearthError as exc:
            raise _converted(exc, self.url) from None

    def delete(self, name: str) -> None:
        try:
            self.client.delete(name)
        except HearthError as exc:
            raise _converted(exc, self.url) from None

    def versions(self, name: str) -> list[dict[str, Any]]:
        return list(self._json("GET", f"/api/functions/{name}/versions"))

    def backends(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/api/backends")["backends"])

    def function_fields(self) -> set[str]:
        """The fields `POST /api/functions` accepts, from the server's OpenAPI schema."""
        schema = self._json("GET", "/openapi.json")
        props = schema.get("components", {}).get("schemas", {}).get("FunctionCreate", {}).get("properties", {})
        return set(props)

    # ----- invocation
    def invoke(self, name: str, event: str) -> InvokeResult:
        started = time.perf_counter()
        try:
            response = self.client.invoke(name, event.encode())
        except HearthError as exc:
            raise _converted(exc, self.url) from None
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code == 401:
            raise _converted(HearthError("Unauthorized", status=401, error_type="Unauthorized"), self.url)
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        headers = response.headers
        error = body.get("error") if response.status_code >= 400 and isinstance(body, dict) else None
        duration = headers.get("x-hearth-duration-ms")
        version = headers.get("x-hearth-version")
        return InvokeResult(
            status=response.status_code,
            body=body,
            text=response.text,
            invocation_id=headers.get("x-hearth-invocation-id") or (error or {}).get("invocation_id"),
            duration_ms=float(duration) if duration else None,
            path=headers.get("x-hearth-path"),
            cold=headers.get("x-hearth-cold") == "true",
            version=int(version) if version and version.isdigit() else None,
            elapsed_ms=elapsed,
            error=error if isinstance(error, dict) else None,
        )

    # ----- metrics and logs (docs/api.md, "Metrics and logs")
    def summary(self, window: str) -> dict[str, Any]:
        return dict(self._json("GET", "/api/metrics/summary", params={"window": window}))

    def function_metrics(self, name: str, window: str, step: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/api/functions/{name}/metrics", params={"window": window, "step": step}))

    def platform_series(self, window: str, step: str) -> dict[str, Any]:
        return dict(self._json("GET", "/api/metrics/series", params={"window": window, "step": step}))

    def invocations(
        self, function: str | None = None, *, status: str | None = None, since: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        for key, value in (("function", function), ("status", status), ("since", since)):
            if value:
                params[key] = value
        return list(self._json("GET", "/api/invocations", params=params)["invocations"])

    def invocation(self, invocation_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/api/invocations/{invocation_id}"))

    def logs(self, name: str, *, since: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if since:
            params["since"] = since
        return list(self._json("GET", f"/api/functions/{name}/logs", params=params)["lines"])


def pretty(value: Any) -> str:
    """JSON for people (the result panel); strings that are not JSON stay as they are."""
    try:
        return json.dumps(value, indent=2, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)
