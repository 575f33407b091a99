"""Plotly figures of metric series (`buckets` of /api/functions/{name}/metrics and /api/metrics/series)."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from hearth.dashboard.ui import ts_of

HEIGHT = 260
CONFIG = {"displayModeBar": False}  # drag to zoom, double-click to reset; the bar hid titles and legends
COLORS = {"p50": "#2b8cbe", "p95": "#f39c12", "p99": "#c0392b", "count": "#3b6fb6", "cold": "#8e44ad"}


def _layout(fig: go.Figure, title: str, y_title: str, *, y_percent: bool = False) -> go.Figure:
    fig.update_layout(
        title={"text": title, "font": {"size": 14}},
        height=HEIGHT,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "y": 1.02, "x": 1, "xanchor": "right", "yanchor": "bottom"},
        hovermode="x unified",
        showlegend=len(fig.data) > 1,
        bargap=0.1,
    )
    fig.update_xaxes(title_text="time (UTC)")
    fig.update_yaxes(title_text=y_title, rangemode="tozero")
    if y_percent:
        fig.update_yaxes(ticksuffix=" %")
    return fig


def _times(buckets: list[dict[str, Any]]) -> list[Any]:
    return [ts_of(b["ts"]) for b in buckets]


def step_label(step_s: float) -> str:
    if step_s % 3600 == 0:
        return f"{step_s / 3600:g} h"
    if step_s % 60 == 0:
        return f"{step_s / 60:g} min"
    return f"{step_s:g} s"


def requests(buckets: list[dict[str, Any]], step_s: float) -> go.Figure:
    fig = go.Figure()
    fig.add_bar(x=_times(buckets), y=[b["count"] for b in buckets], name="invocations", marker_color=COLORS["count"])
    throttles = [b.get("throttles") or 0 for b in buckets]
    if any(throttles):
        fig.add_bar(x=_times(buckets), y=throttles, name="throttled (429)", marker_color="#999999")
    return _layout(fig, "Request volume", f"invocations per {step_label(step_s)}")


def latency(buckets: list[dict[str, Any]]) -> go.Figure:
    fig = go.Figure()
    for key in ("p50", "p95", "p99"):
        fig.add_scatter(
            x=_times(buckets),
            y=[b.get(f"{key}_ms") for b in buckets],
            name=key,
            mode="lines+markers",
            line={"color": COLORS[key]},
            connectgaps=False,
        )
    return _layout(fig, "Latency (p50 / p95 / p99)", "ms")


def error_rate(buckets: list[dict[str, Any]]) -> go.Figure:
    fig = go.Figure()
    rates = [None if not b["count"] else (b.get("error_rate") or 0) * 100 for b in buckets]
    fig.add_scatter(x=_times(buckets), y=rates, name="error rate", mode="lines+markers", line={"color": "#c0392b"})
    return _layout(fig, "Error rate", "errors / invocations", y_percent=True)


def cold_starts(buckets: list[dict[str, Any]], step_s: float) -> go.Figure:
    fig = go.Figure()
    fig.add_bar(
        x=_times(buckets),
        y=[b.get("cold_starts") or 0 for b in buckets],
        name="cold starts",
        marker_color=COLORS["cold"],
    )
    return _layout(fig, "Cold starts", f"starts per {step_label(step_s)}")


def cpu(buckets: list[dict[str, Any]], title: str = "CPU", y_title: str = "% of one core") -> go.Figure:
    fig = go.Figure()
    fig.add_scatter(
        x=_times(buckets),
        y=[b.get("cpu_percent") for b in buckets],
        name="CPU",
        mode="lines+markers",
        fill="tozeroy",
        line={"color": "#16a085"},
    )
    return _layout(fig, title, y_title, y_percent=True)


def memory(buckets: list[dict[str, Any]], title: str = "Memory") -> go.Figure:
    fig = go.Figure()
    values = [None if b.get("memory_bytes") is None else b["memory_bytes"] / 1024**2 for b in buckets]
    fig.add_scatter(
        x=_times(buckets), y=values, name="memory", mode="lines+markers", fill="tozeroy", line={"color": "#2c3e50"}
    )
    return _layout(fig, title, "MiB")


def totals(buckets: list[dict[str, Any]]) -> dict[str, Any]:
    """Sums over a series' buckets (for the figures above the charts)."""
    count = sum(b["count"] for b in buckets)
    errors = sum(b.get("errors") or 0 for b in buckets)
    return {
        "invocations": count,
        "errors": errors,
        "error_rate": errors / count if count else None,
        "cold_starts": sum(b.get("cold_starts") or 0 for b in buckets),
        "throttles": sum(b.get("throttles") or 0 for b in buckets),
        "p95_max": max((b["p95_ms"] for b in buckets if b.get("p95_ms") is not None), default=None),
    }
