"""Function detail: test-invoke panel, live charts, recent invocations with their logs, version history."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import streamlit as st

from hearth.dashboard import charts, ui
from hearth.dashboard.api import DashboardError, HearthApi, pretty

S = st.session_state

api = ui.api()
ui.show_flash()
names = [f["name"] for f in ui.guarded(api.functions)]
if not names:
    st.title("Function detail")
    st.info("No functions yet.")
    st.page_link(str(ui.VIEWS / "new.py"), label="Create a function", icon=":material/add_circle:")
    st.stop()
wanted = ui.query_function()
index = names.index(wanted) if wanted in names else 0
name = st.selectbox("Function", names, index=index, key=f"detail_pick_{names[index]}")
if name != wanted:
    st.query_params["function"] = name
function = ui.guarded(lambda: api.function(name))

st.title(name)
if function.get("description"):
    st.caption(function["description"])
instances = function.get("instances") or {}
cols = st.columns(6)
cols[0].metric("Version", function["version"])
cols[1].metric("Language", function["language"] if not function.get("image") else "image")
cols[2].metric("Backend", function["backend"])
cols[3].metric("Warm / busy", f"{instances.get('warm', 0)} / {instances.get('busy', 0)}")
cols[4].metric("Memory", f"{function['memory_mb']} MiB")
cols[5].metric("Timeout", f"{function['timeout_s']:g} s")
if function.get("image"):  # an image function (language provided): its code is the image
    st.caption(f"Image `{function['image']}` ({(function.get('image_id') or '')[:19]})")
trigger = f"{api.url}/fn{function['route'] if function['route'] != '/' else '/'}"
st.markdown(
    f"HTTP trigger: `{trigger}` ({function['auth']}) · handler `{function['handler']}` · "
    f"{function['cpus']:g} CPU · concurrency {function['concurrency']} · max {function['max_instances']} instances"
    + (f" · batching ≤ {function['batch']['max_size']}" if function.get("batch") else "")
)
st.page_link(str(ui.VIEWS / "edit.py"), label="Edit or delete", icon=":material/edit:", query_params={"function": name})


# ----- test invoke
def run_invoke(api: HearthApi, name: str, event_text: str) -> None:
    key = f"invoke_result_{name}"
    try:
        json.loads(event_text or "{}")
    except ValueError as exc:
        S[key] = {"invalid": f"The event is not valid JSON: {exc}"}
        return
    try:
        result = api.invoke(name, event_text or "{}")
    except DashboardError as exc:
        S[key] = {"invalid": exc.message}
        return
    out: dict[str, Any] = asdict(result)
    if result.invocation_id:
        try:
            record = api.invocation(result.invocation_id)
            out["stdout"], out["stderr"] = record.get("stdout") or "", record.get("stderr") or ""
            out["record"] = {k: record.get(k) for k in ("init_ms", "cpu_ms", "memory_peak_bytes", "queue_ms")}
        except DashboardError:
            out["stdout"] = out["stderr"] = None
    S[key] = out


def show_result(out: dict[str, Any]) -> None:
    if "invalid" in out:
        st.error(out["invalid"], icon=":material/error:")
        return
    ok = out["status"] < 400
    error = out.get("error") or {}
    label = f"{out['status']} OK" if ok else f"{out['status']} {error.get('type', 'error')}"
    (st.success if ok else st.error)(f"**{label}**", icon=":material/check_circle:" if ok else ":material/error:")
    cols = st.columns(4)
    cols[0].metric("Duration", ui.ms(out.get("duration_ms")), help="the handler's round trip, measured by the host")
    cols[1].metric("Round trip", ui.ms(out.get("elapsed_ms")), help="from the dashboard, HTTP included")
    path = out.get("path") or "—"
    cols[2].metric("Start", "cold" if out.get("cold") else "warm", help=f"path: {path}")
    cols[3].metric("Version", out.get("version") or "—")
    st.caption(f"Invocation `{out.get('invocation_id')}` · path **{path}**")
    if ok:
        st.markdown("**Result**")
        st.code(pretty(out["body"]) if out.get("body") is not None else out.get("text", ""), language="json")
    else:
        st.markdown(f"**{error.get('type', 'Error')}**: {error.get('message', out.get('text', ''))}")
        if error.get("traceback"):
            st.code(error["traceback"], language="text")
    for stream in ("stdout", "stderr"):
        text = out.get(stream)
        if text:
            st.markdown(f"**{stream}**")
            st.code(text, language="text")
    if out.get("stdout") == "" and out.get("stderr") == "":
        st.caption("No output was logged.")


st.header("Test invoke")
left, right = st.columns([2, 3])
with left:
    event_text = st.text_area("Event (JSON)", value="{}", height=160, key=f"event_{name}")
    if st.button("Invoke", type="primary", icon=":material/play_arrow:", key=f"invoke_{name}"):
        with st.spinner("Invoking…"):
            run_invoke(api, name, event_text)
with right:
    result = S.get(f"invoke_result_{name}")
    if result:
        show_result(result)
    else:
        st.caption("Send an event to see the result, status, duration, cold or warm start, and the logs.")

# ----- live charts, recent invocations, logs
st.header("Live metrics")
controls = st.columns([2, 3, 5])
with controls[0]:
    window = ui.window_picker(f"detail_window_{name}")
with controls[1]:
    st.write("")
    period = ui.refresh_picker(f"detail_refresh_{name}")


@st.fragment(run_every=period)
def live() -> None:
    series = ui.guarded(lambda: api.function_metrics(name, window, ui.WINDOWS[window]))
    buckets, step_s = series["buckets"], series["step_s"]
    totals = charts.totals(buckets)
    cols = st.columns(5)
    cols[0].metric("Invocations", totals["invocations"])
    cols[1].metric("Errors", totals["errors"])
    cols[2].metric("Error rate", ui.percent(totals["error_rate"]))
    cols[3].metric("Cold starts", totals["cold_starts"])
    cols[4].metric("Throttles (429)", totals["throttles"])
    left, right = st.columns(2)
    left.plotly_chart(charts.requests(buckets, step_s), config=charts.CONFIG, key="fn_requests")
    right.plotly_chart(charts.latency(buckets), config=charts.CONFIG, key="fn_latency")
    left.plotly_chart(charts.error_rate(buckets), config=charts.CONFIG, key="fn_errors")
    right.plotly_chart(charts.cold_starts(buckets, step_s), config=charts.CONFIG, key="fn_cold")
    left.plotly_chart(charts.cpu(buckets, "CPU (all its sandboxes)"), config=charts.CONFIG, key="fn_cpu")
    right.plotly_chart(charts.memory(buckets, "Memory (all its sandboxes)"), config=charts.CONFIG, key="fn_memory")
    if not series.get("exact_percentiles", True):
        st.caption("Percentiles of this window come from per-minute histograms (within ±1.1 %).")

    st.header("Recent invocations")
    records = ui.guarded(lambda: api.invocations(name, limit=25))
    if not records:
        st.caption("No invocations yet.")
    else:
        st.dataframe(
            [
                {
                    "time": ui.when(r["started_at"]),
                    "status": r["status"],
                    "start": r.get("path"),
                    "duration (ms)": r.get("duration_ms"),
                    "version": r.get("version"),
                    "mode": r.get("mode"),
                    "memory peak": ui.mib(r.get("memory_peak_bytes")) if r.get("memory_peak_bytes") else "—",
                    "error": f"{r['error']['type']}: {r['error']['message']}" if r.get("error") else "",
                    "id": r["id"],
                }
                for r in records
            ],
            hide_index=True,
            column_config={"duration (ms)": st.column_config.NumberColumn(format="%.2f")},
            key="fn_invocations",
        )
        labels = {
            r["id"]: f"{ui.when(r['started_at'])} · {r['status']} · {ui.ms(r.get('duration_ms'))} · {r['id']}"
            for r in records
        }
        chosen = st.selectbox("Logs of invocation", list(labels), format_func=labels.get, key=f"logs_pick_{name}")
        if chosen:
            record = ui.guarded(lambda: api.invocation(chosen))
            if record.get("error"):
                st.error(f"{record['error']['type']}: {record['error']['message']}")
            out, err = record.get("stdout") or "", record.get("stderr") or ""
            if out:
                st.code(out, language="text")
            if err:
                st.markdown("stderr")
                st.code(err, language="text")
            if not out and not err:
                st.caption("This invocation logged nothing.")
            if record.get("logs_truncated"):
                st.caption("Its logs were truncated at HEARTH_MAX_LOG_BYTES.")

    st.header("Log lines")
    lines = ui.guarded(lambda: api.logs(name, limit=100))
    if lines:
        st.code(
            "\n".join(f"{ui.when(x['ts'])} {x['invocation_id'][:8]} {x['stream']:6} {x['line']}" for x in lines),
            language="text",
        )
    else:
        st.caption("No log lines yet.")


live()

st.header("Version history")
versions = ui.guarded(lambda: api.versions(name))
st.dataframe(
    [
        {
            "version": v["version"],
            "created": v["created_at"],
            "language": v["language"],
            "handler": v["handler"],
            "route": v["route"],
            "backend": v["backend"],
            "memory (MiB)": v["memory_mb"],
            "timeout (s)": v["timeout_s"],
            "CPUs": v["cpus"],
            "code": f"{v['code_size']} B · {v['code_sha256'][:12]}",
        }
        for v in sorted(versions, key=lambda v: -v["version"])
    ],
    hide_index=True,
    key="fn_versions",
)
