"""Every route of the API is documented (issue #15): Hearth's own in docs/api.md, the Lambda API's
(`/2015-03-31/...`) in docs/lambda.md.

The app is built as `hearth.api.app.create_app` builds it (no lifespan, no server). A route counts as
documented when the document writes "`METHOD /path" (inside backticks, whitespace and line breaks
collapsed), its parameters compared by position only (`{name}`, `{id}` and `{invocation_id:jobid}` are
all `{}`) and a trailing slash ignored; the HTTP trigger (`/fn/{path:path}`, any method) by the prose
that describes it. Left out: the framework's own routes (`/docs`, `/openapi.json`,
`/redoc`, ...) and the Lambda API's catch-all `/<version>/{rest:path}` routes that answer every
operation Hearth does not serve with UnsupportedOperation.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from fastapi import FastAPI
from fastapi.routing import APIRoute

from hearth.api.app import create_app
from hearth.config import Settings
from hearth.testing import REPO

LAMBDA_PREFIX = "/2015-03-31/"
CATCH_ALL = re.compile(r"^/\d{4}-\d{2}-\d{2}/\{rest:path\}$")
# The HTTP trigger takes any method on any path below /fn/: docs/api.md describes it in prose,
# "Any method (`GET`, `POST`, ...) on `/fn/<route>[/more/path]`", which must name each of its methods.
HTTP_TRIGGER = "/fn/{path:path}"
HTTP_TRIGGER_PROSE = re.compile(r"Any method \(([^)]*)\) on `/fn/<route>")


def api_routes(app: FastAPI) -> Iterator[tuple[str, APIRoute]]:
    """(full path, route) of each APIRoute, through included routers (FastAPI >= 0.165 keeps them nested)."""
    for route in app.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is not None:
            for context in contexts():
                if isinstance(context.original_route, APIRoute):
                    yield context.path, context.original_route
        elif isinstance(route, APIRoute):
            yield route.path, route


def routes(tmp_path: Path) -> set[tuple[str, str]]:
    app = create_app(Settings(data_dir=tmp_path))
    found = set()
    for path, route in api_routes(app):
        if CATCH_ALL.match(path):
            continue
        found.update((method, path) for method in route.methods)
    return found


def normalise(text: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", " ".join(text.split()))


def documented(document: str, method: str, path: str) -> bool:
    target = normalise(path).rstrip("/") or "/"
    return re.search(rf"`{method} {re.escape(target)}/?(?=[`?\[\s,;:)])", document) is not None


def test_routes_are_found(tmp_path: Path) -> None:
    found = routes(tmp_path)
    assert ("GET", "/healthz") in found and ("POST", "/2015-03-31/functions") in found, sorted(found)
    assert not any(path in ("/docs", "/openapi.json", "/redoc") for _, path in found)


def test_every_route_is_documented(tmp_path: Path) -> None:
    api = normalise((REPO / "docs" / "api.md").read_text())
    lambda_doc = normalise((REPO / "docs" / "lambda.md").read_text())
    missing = []
    for method, path in sorted(routes(tmp_path)):
        if path == HTTP_TRIGGER:
            prose = HTTP_TRIGGER_PROSE.search(api)
            if prose is None or f"`{method}`" not in prose.group(1):
                missing.append(f"{method} {path} (docs/api.md)")
        elif path.startswith(LAMBDA_PREFIX):
            if not documented(lambda_doc, method, path):
                missing.append(f"{method} {path} (docs/lambda.md)")
        elif not documented(api, method, path):
            missing.append(f"{method} {path} (docs/api.md)")
    assert not missing, "routes not documented:\n" + "\n".join(missing)
