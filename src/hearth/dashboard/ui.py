"""Shared pieces of the dashboard's pages: the API connection, error display, formatting."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import streamlit as st

from hearth.dashboard.api import DashboardError, HearthApi
from hearth.dashboard.settings import DashboardSettings

T = TypeVar("T")
VIEWS = Path(__file__).resolve().parent / "views"

# Chart windows offered everywhere, with the step that keeps each chart at 30-120 buckets.
WINDOWS: dict[str, str] = {"5m": "10s", "15m": "15s", "1h": "1m", "6h": "5m", "24h": "15m", "7d": "2h"}
WINDOW_LABELS = {
    "5m": "last 5 minutes",
    "15m": "last 15 minutes",
    "1h": "last hour",
    "6h": "last 6 hours",
    "24h": "last 24 hours",
    "7d": "last 7 days",
}
KEY_OVERRIDE = "hearth_api_key_override"


def settings() -> DashboardSettings:
    return DashboardSettings()


@st.cache_resource(max_entries=8, show_spinner=False)
def _api_for(url: str, key: str | None, timeout: float) -> HearthApi:
    return HearthApi(url, key, timeout=timeout)


def api() -> HearthApi:
    config = settings()
    key = st.session_state.get(KEY_OVERRIDE) or config.resolved_key()
    return _api_for(config.api_url, key, config.dashboard_timeout_s)


def show_error(error: DashboardError) -> None:
    if error.unreachable:
        st.error(f"**Hearth API unreachable.** {error.message}", icon=":material/cloud_off:")
    elif error.unauthorized:
        st.error(f"**API key refused.** {error.message}", icon=":material/key_off:")
    else:
        st.error(error.message, icon=":material/error:")


def show_flash() -> None:
    """A message left by the page that sent us here (created, saved, deleted)."""
    message = st.session_state.pop("flash", None)
    if message:
        st.success(message, icon=":material/check_circle:")


def guarded(call: Callable[[], T]) -> T:
    """Run an API call; on failure show a clear message (never a traceback) and end this run of the page."""
    try:
        return call()
    except DashboardError as exc:
        show_error(exc)
        st.stop()
        raise  # unreachable: st.stop() raises


def sidebar() -> None:
    """Where the dashboard points, and a way to use another key for this browser session."""
    config = settings()
    with st.sidebar:
        st.caption(f"API: `{config.api_url}`")
        with st.expander("API key", expanded=False):
            st.caption(
                "Used for this browser session only; empty = the dashboard's own key (the admin's functions "
                "only, no users). Enter the admin key to see every user's functions."
            )
            entered = st.text_input("API key", type="password", key="hearth_api_key_input")
            if entered != st.session_state.get(KEY_OVERRIDE, ""):
                st.session_state[KEY_OVERRIDE] = entered


def query_function() -> str | None:
    value = st.query_params.get("function")
    return value or None


def ts_of(unix: float | None) -> datetime | None:
    return datetime.fromtimestamp(unix, UTC) if unix is not None else None


def when(unix: float | None) -> str:
    at = ts_of(unix)
    return at.strftime("%Y-%m-%d %H:%M:%S UTC") if at else "—"


def mib(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 1024**3:
        return f"{value / 1024**3:.2f} GiB"
    return f"{value / 1024**2:.1f} MiB"


def ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f} ms" if value < 1000 else f"{value / 1000:.2f} s"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def window_picker(key: str, default: str = "1h") -> str:
    options = list(WINDOWS)
    return str(
        st.selectbox("Window", options, index=options.index(default), key=key, format_func=lambda w: WINDOW_LABELS[w])
    )


def refresh_picker(key: str) -> float | None:
    """An auto-refresh switch; the period (seconds) when on."""
    period = settings().dashboard_refresh_s
    on = st.toggle(f"Auto-refresh (every {period:g} s)", value=True, key=key)
    return period if on else None


def row_of(data: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    return {k: data.get(k) for k in keys}
