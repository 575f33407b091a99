"""Overview: platform-wide totals and charts, refreshing live."""

from __future__ import annotations

import streamlit as st

from hearth.dashboard import charts, ui
from hearth.dashboard.api import DashboardError

st.title("Overview")
controls = st.columns([2, 3, 5])
with controls[0]:
    window = ui.window_picker("overview_window")
with controls[1]:
    st.write("")
    period = ui.refresh_picker("overview_refresh")


@st.fragment(run_every=period)
def live() -> None:
    api = ui.api()
    summary = ui.guarded(lambda: api.summary(window))
    platform, totals = summary.get("platform", {}), summary.get("totals", {})

    st.subheader("Now")
    cols = st.columns(7)
    cols[0].metric("Functions", platform.get("functions", 0))
    cols[1].metric(
        "Warm sandboxes",
        platform.get("warm_sandboxes", 0) + platform.get("busy_sandboxes", 0),
        help=f"busy: {platform.get('busy_sandboxes', 0)}, starting: {platform.get('starting_sandboxes', 0)}",
    )
    cols[2].metric("Stem cells", platform.get("stem_cells", 0), help="pre-started generic sandboxes")
    cols[3].metric("Waiting calls", platform.get("waiting_calls", 0), help="calls waiting for a free instance")
    cols[4].metric("Queue depth", platform.get("queue_depth", 0), help="async invocations waiting")
    cols[5].metric("Host CPU", f"{platform.get('host_cpu_percent', 0):.1f} %", help="of all cores")
    total_memory = platform.get("host_memory_total_bytes") or 0
    cols[6].metric(
        "Host memory",
        ui.mib(platform.get("host_memory_bytes")),
        help=f"of {ui.mib(total_memory)}; sandboxes: {ui.mib(platform.get('sandbox_memory_bytes'))}",
    )

    st.subheader(f"Over the {ui.WINDOW_LABELS[window]}")
    cols = st.columns(7)
    cols[0].metric("Invocations", totals.get("invocations", 0))
    cols[1].metric("Requests / s", f"{totals.get('rps', 0):.3g}")
    cols[2].metric("Errors", totals.get("errors", 0))
    cols[3].metric("Error rate", ui.percent(totals.get("error_rate")))
    cols[4].metric("p95 latency", ui.ms(totals.get("p95_ms")))
    cols[5].metric("Cold starts", totals.get("cold_starts", 0))
    cols[6].metric("Throttles (429)", totals.get("throttles", 0))

    try:
        series = api.platform_series(window, ui.WINDOWS[window])
    except DashboardError as exc:
        if exc.status == 403:
            st.info("Platform-wide charts need an admin key; each function's page has its own charts.")
            series = None
        else:
            ui.show_error(exc)
            return
    if series is not None:
        buckets, step_s = series["buckets"], series["step_s"]
        left, right = st.columns(2)
        left.plotly_chart(charts.requests(buckets, step_s), config=charts.CONFIG, key="ov_requests")
        right.plotly_chart(charts.latency(buckets), config=charts.CONFIG, key="ov_latency")
        left.plotly_chart(charts.error_rate(buckets), config=charts.CONFIG, key="ov_errors")
        right.plotly_chart(charts.cold_starts(buckets, step_s), config=charts.CONFIG, key="ov_cold")
        left.plotly_chart(charts.cpu(buckets, "Host CPU", "% of all cores"), config=charts.CONFIG, key="ov_cpu")
        right.plotly_chart(charts.memory(buckets, "Host memory"), config=charts.CONFIG, key="ov_memory")

    st.subheader("Busiest functions")
    rows = sorted(summary.get("functions", []), key=lambda r: (-r.get("invocations", 0), r["function"]))
    if not rows:
        st.caption("No functions yet: create one under **New function**.")
        return
    st.dataframe(
        [
            {
                "function": r["function"],
                "invocations": r.get("invocations", 0),
                "errors": r.get("errors", 0),
                "error rate": (r.get("error_rate") or 0) * 100,
                "p95 (ms)": r.get("p95_ms"),
                "cold starts": r.get("cold_starts", 0),
                "throttles": r.get("throttles", 0),
                "warm": r.get("warm_instances", 0),
                "memory (MiB)": (r.get("mean_memory_bytes") or 0) / 1024**2,
                "CPU (%)": r.get("mean_cpu_percent") or 0,
            }
            for r in rows[:20]
        ],
        hide_index=True,
        column_config={
            "error rate": st.column_config.NumberColumn(format="%.1f %%"),
            "p95 (ms)": st.column_config.NumberColumn(format="%.1f"),
            "memory (MiB)": st.column_config.NumberColumn(format="%.1f"),
            "CPU (%)": st.column_config.NumberColumn(format="%.1f"),
        },
    )


live()
