"""What the form's buttons do: create a function, save a new version, delete a function."""

from __future__ import annotations

from collections.abc import Collection

import streamlit as st

from hearth.dashboard import ui
from hearth.dashboard.api import DashboardError, HearthApi
from hearth.dashboard.editor import state
from hearth.dashboard.editor.body import create_body, errors_by_field, patch_body

S = st.session_state


def submit(api: HearthApi, fields: Collection[str], *, create: bool) -> None:
    form = state.values()
    try:
        if create:
            saved = api.create(create_body(form, fields))
        else:
            changes = patch_body(form, fields, state.loaded())
            if not changes:
                st.info("Nothing changed: no new version was made.")
                return
            saved = api.patch(S.form_name, changes)
    except DashboardError as exc:
        if exc.unreachable or exc.unauthorized:
            ui.show_error(exc)
            return
        S.form_errors = errors_by_field(exc.fields, exc.message)
        S.form_error_message = exc.message
        st.rerun()
    S.form_errors = {}
    if create:
        S.flash = f"Created **{saved['name']}**, version {saved['version']}."
        st.switch_page(str(ui.VIEWS / "detail.py"), query_params={"function": saved["name"]})
    S.flash = f"Saved **{saved['name']}**: now version {saved['version']}."
    S.form_target = None  # reload the form from the new version
    st.rerun()


def delete(api: HearthApi, name: str) -> None:
    if not S.get("form_confirm_delete"):
        if st.button("Delete function…", icon=":material/delete:", key="form_delete"):
            S.form_confirm_delete = True
            st.rerun()
        return
    st.warning(
        f"Delete **{name}**? Its sandboxes stop and its trigger `/fn{S.form_route}` goes away; "
        "its invocation records are kept. This cannot be undone."
    )
    cols = st.columns([2, 2, 6])
    if cols[0].button("Yes, delete", type="primary", key="form_delete_confirm"):
        try:
            api.delete(name)
        except DashboardError as exc:
            ui.show_error(exc)
            return
        S.flash = f"Deleted **{name}**."
        S.form_confirm_delete = False
        S.form_target = None
        st.switch_page(str(ui.VIEWS / "functions.py"))
    if cols[1].button("Cancel", key="form_delete_cancel"):
        S.form_confirm_delete = False
        st.rerun()
