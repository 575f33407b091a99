"""Hearth's dashboard: `streamlit run src/hearth/dashboard/app.py` (or `hearth up`, which starts it).

It talks to the Hearth API only (HEARTH_API_URL), never to the database, with a key of its own that
cannot manage users or keys (hearth.dashboard.settings).
"""

from __future__ import annotations

import streamlit as st

from hearth.dashboard import ui

HERE = ui.VIEWS

# No page_icon: a Material icon favicon is fetched from a font CDN, and the dashboard must work offline.
st.set_page_config(page_title="Hearth", layout="wide")

PAGES = [
    st.Page(HERE / "overview.py", title="Overview", icon=":material/monitoring:", url_path="overview", default=True),
    st.Page(HERE / "functions.py", title="Functions", icon=":material/functions:", url_path="functions"),
    st.Page(HERE / "detail.py", title="Function detail", icon=":material/query_stats:", url_path="function"),
    st.Page(HERE / "new.py", title="New function", icon=":material/add_circle:", url_path="new"),
    st.Page(HERE / "edit.py", title="Edit function", icon=":material/edit:", url_path="edit"),
]

page = st.navigation(PAGES)
ui.sidebar()
page.run()
