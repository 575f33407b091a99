"""Dashboard fixtures: the real app (Streamlit's AppTest) pointed at a real Hearth server."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from streamlit.testing.v1 import AppTest

from hearth.dashboard.launcher import APP
from hearth.testing import HearthServer

VIEWS = "views"


@pytest.fixture
def dashboard_env(hearth: HearthServer, monkeypatch: pytest.MonkeyPatch) -> HearthServer:
    """The dashboard's settings point at the session's Hearth server (as `hearth serve --dashboard` does)."""
    monkeypatch.setenv("HEARTH_API_URL", hearth.base_url)
    monkeypatch.setenv("HEARTH_API_KEY", hearth.api_key)
    return hearth


@pytest.fixture
def open_page(dashboard_env: HearthServer) -> Iterator[Callable[..., AppTest]]:
    """open_page("detail", function="x"): the app run once, then switched to that page with those query params."""

    def open_(page: str, **query: str) -> AppTest:
        at = AppTest.from_file(APP, default_timeout=60)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        if page != "overview":
            at.switch_page(f"{VIEWS}/{page}.py")
        at.query_params.update(query)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    yield open_
