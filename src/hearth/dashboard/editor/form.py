"""The New / Edit page: which function the form is for, then its sections and buttons."""

from __future__ import annotations

from typing import Any

import streamlit as st

from hearth.dashboard import ui
from hearth.dashboard.api import HearthApi
from hearth.dashboard.editor import actions, sections, state


def render(create: bool) -> None:
    api = ui.api()
    ui.show_flash()
    backends = ui.guarded(api.backends)
    fields = ui.guarded(api.function_fields)
    default_backend = next((b["name"] for b in backends if b.get("default")), backends[0]["name"] if backends else "")
    function: dict[str, Any] | None = None
    if create:
        target = "new"
        st.title("New function")
    else:
        function = _pick(api)
        if function is None:
            return
        target = f"edit:{function['name']}:{function['version']}"
    state.load_once(target, function, default_backend)

    sections.errors_banner()
    sections.identity(create)
    sections.code(function)
    sections.trigger(fields)
    sections.limits()
    sections.scaling()
    sections.isolation(backends)
    sections.environment()
    sections.batching()
    sections.async_and_schedule(fields)

    st.divider()
    label = "Create function" if create else "Save (new version)"
    if st.button(label, type="primary", icon=":material/rocket_launch:", key="form_submit"):
        actions.submit(api, fields, create=create)
    if not create and function is not None:
        cols = st.columns([2, 8])
        cols[0].page_link(
            str(ui.VIEWS / "detail.py"),
            label="Open its page",
            icon=":material/query_stats:",
            query_params={"function": function["name"]},
        )
        st.subheader("Danger zone")
        actions.delete(api, function["name"])


def _pick(api: HearthApi) -> dict[str, Any] | None:
    """The function to edit (the page's `?function=`, else the first), with its title; None: there is none."""
    names = [f["name"] for f in ui.guarded(api.functions)]
    if not names:
        st.title("Edit function")
        st.info("No functions yet.")
        st.page_link(str(ui.VIEWS / "new.py"), label="Create a function", icon=":material/add_circle:")
        return None
    wanted = ui.query_function()
    index = names.index(wanted) if wanted in names else 0
    name = st.selectbox("Function", names, index=index, key=f"form_pick_{names[index]}")
    if name != wanted:
        st.query_params["function"] = name
    function: dict[str, Any] = ui.guarded(lambda: api.function(name))
    st.title(f"Edit {name}")
    st.caption(
        f"Version **{function['version']}** · updated {function['updated_at']} · "
        f"code {function['code_size']} bytes · sha256 `{function['code_sha256'][:12]}`"
    )
    return function
