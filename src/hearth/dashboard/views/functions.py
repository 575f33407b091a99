"""Functions: every function with its last hour, searchable, with links to its pages."""

from __future__ import annotations

import streamlit as st

from hearth.dashboard import ui
from hearth.dashboard.api import DashboardError

st.title("Functions")
ui.show_flash()
api = ui.api()
functions = ui.guarded(api.functions)
try:
    summary = {row["function"]: row for row in api.summary("1h").get("functions", [])}
except DashboardError as exc:  # the list is still useful without the numbers
    st.warning(f"Metrics unavailable: {exc.message}")
    summary = {}

if not functions:
    st.info("No functions yet.")
    st.page_link(str(ui.VIEWS / "new.py"), label="Create a function", icon=":material/add_circle:")
    st.stop()

filters = st.columns([4, 2, 2])
search = filters[0].text_input("Search", placeholder="name, route or description", key="fn_search")
languages = sorted({f["language"] for f in functions})
backends = sorted({f["backend"] for f in functions})
language = filters[1].multiselect("Language", languages, key="fn_language")
backend = filters[2].multiselect("Backend", backends, key="fn_backend")

needle = search.strip().lower()
shown = [
    f
    for f in functions
    if (not needle or any(needle in (f.get(k) or "").lower() for k in ("name", "route", "description")))
    and (not language or f["language"] in language)
    and (not backend or f["backend"] in backend)
]
rows = []
for f in shown:
    stats = summary.get(f["name"], {})
    instances = f.get("instances") or {}
    rows.append(
        {
            "name": f["name"],
            "route": f"/fn{f['route']}" if f["route"] != "/" else "/fn/",
            "language": f["language"],
            "backend": f["backend"],
            "version": f["version"],
            "warm": instances.get("warm", 0) + instances.get("busy", 0),
            "invocations (1h)": stats.get("invocations", 0),
            "errors (1h)": stats.get("errors", 0),
            "p95 (1h, ms)": stats.get("p95_ms"),
            "details": f"function?function={f['name']}",
            "edit": f"edit?function={f['name']}",
        }
    )
st.caption(f"{len(rows)} of {len(functions)} functions")
st.dataframe(
    rows,
    hide_index=True,
    column_config={
        "p95 (1h, ms)": st.column_config.NumberColumn(format="%.1f"),
        "details": st.column_config.LinkColumn("details", display_text="open"),
        "edit": st.column_config.LinkColumn("edit", display_text="edit"),
    },
    key="fn_table",
)

st.subheader("Go to")
names = [f["name"] for f in shown]
if names:
    go = st.columns([4, 1, 1])
    chosen = go[0].selectbox("Function", names, key="fn_goto", label_visibility="collapsed")
    if go[1].button("Open", icon=":material/query_stats:", key="fn_open"):
        st.switch_page(str(ui.VIEWS / "detail.py"), query_params={"function": chosen})
    if go[2].button("Edit", icon=":material/edit:", key="fn_edit"):
        st.switch_page(str(ui.VIEWS / "edit.py"), query_params={"function": chosen})
