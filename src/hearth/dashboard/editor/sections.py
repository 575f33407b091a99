"""The form's parts, top to bottom; each shows the API's validation error under the fields it is about."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import streamlit as st

from hearth.dashboard.editor import state
from hearth.dashboard.editor.body import GENERAL
from hearth.dashboard.editor.state import LANGUAGES, RUNTIMES
from hearth.dashboard.templates import TEMPLATES

try:  # a maintained Ace-based component (bundled, works offline); a plain text area otherwise
    from code_editor import code_editor
except ImportError:  # pragma: no cover - it is a dependency; kept so a broken install still deploys
    code_editor = None

S = st.session_state
ACE_MODES = {"provided": "sh"}  # a provided function's one file is its `bootstrap` (a script)


def field_error(field: str) -> None:
    message = state.errors().get(field)
    if message:
        st.error(f"{field}: {message}", icon=":material/error:")


def errors_banner() -> None:
    general = state.errors().get(GENERAL)
    if general:
        st.error(general, icon=":material/error:")
    elif state.errors():
        st.error(f"Hearth rejected the function: {S.get('form_error_message', '')}", icon=":material/error:")


def identity(create: bool) -> None:
    """Name, language, runtime, starter template (new functions) and description."""
    top = st.columns([3, 2, 3])
    top[0].text_input(
        "Name",
        key="form_name",
        disabled=not create,
        max_chars=63,
        help="lowercase letters, digits and '-'; the URL and API name of the function",
    )
    with top[0]:
        field_error("name")
    top[1].selectbox("Language", LANGUAGES, key="form_language", on_change=state.on_language)
    with top[1]:
        field_error("language")
    if S.get("form_runtime") not in RUNTIMES[S.form_language]:
        S.form_runtime = state.DEFAULT_RUNTIME
    top[1].selectbox(
        "Runtime",
        RUNTIMES[S.form_language],
        key="form_runtime",
        help="the version: python3.11 / nodejs18.x are Debian bookworm's, python3.13 / nodejs20.x trixie's",
    )
    with top[1]:
        field_error("runtime")
    if create:
        top[2].selectbox(
            "Starter template", list(TEMPLATES[S.form_language]), key="form_template", on_change=state.on_template
        )
    st.text_input("Description", key="form_description", max_chars=1024)
    field_error("description")


def code(function: dict[str, Any] | None) -> None:
    """The code editor, or, for a zip bundle, where its code is changed."""
    if function is not None and function.get("code") is None:
        st.info(
            f"Deployed as a zip bundle ({', '.join(function.get('files') or [])}); its code is changed "
            "with `hearth deploy`, the settings here."
        )
        return
    st.toggle(
        "Plain text editor",
        key="form_plain",
        on_change=state.on_plain,
        help="a plain text area instead of the code editor",
    )
    _code_input(disabled=False)
    field_error("code")


def _code_input(disabled: bool) -> None:
    language = S.form_language
    nonce = S.form_editor_nonce
    plain = S.get("form_plain", False) or code_editor is None
    if plain:
        S.form_code = st.text_area(
            "Code", value=S.form_editor_seed, height=320, key=f"form_code_text_{nonce}", disabled=disabled
        )
        return
    st.markdown("**Code**")
    response = code_editor(
        S.form_editor_seed,
        lang=ACE_MODES.get(language, language),
        theme="default",
        height=[16, 32],
        response_mode=["debounce", "blur"],
        options={"tabSize": 4 if language == "python" else 2, "useSoftTabs": True, "readOnly": disabled},
        props={"style": {"borderRadius": "0.5rem", "border": "1px solid #d0d4da"}},
        key=f"form_editor_{nonce}",
    )
    if isinstance(response, dict) and response.get("id") and response["id"] != S.get("form_editor_last_id"):
        S.form_editor_last_id = response["id"]
        S.form_code = response.get("text", "")
    st.caption("Edits are taken as you type; the editor highlights Python and JavaScript.")


def trigger(fields: Collection[str]) -> None:
    """Handler, HTTP route, its auth and event format."""
    st.subheader("Settings")
    cols = st.columns(3)
    with cols[0]:
        st.text_input("Handler", key="form_handler", help="function name in the file, or module.function")
        field_error("handler")
    with cols[1]:
        st.text_input(
            "Route",
            key="form_route",
            placeholder=f"/{S.form_name or '<name>'}",
            help="HTTP trigger path under /fn; empty = /<name>",
        )
        field_error("route")
    with cols[2]:
        st.selectbox(
            "HTTP trigger auth",
            ["public", "key"],
            key="form_auth",
            help="key: the trigger needs an invoke key of the owner",
        )
        field_error("auth")
        if "http_payload_format" in fields:
            st.selectbox(
                "HTTP event format",
                ["2.0", "1.0"],
                key="form_payload_format",
                help="the event the trigger delivers: AWS payload format 2.0 (function URL, HTTP API) "
                "or 1.0 (API Gateway proxy event)",
            )
            field_error("http_payload_format")


def limits() -> None:
    cols = st.columns(3)
    with cols[0]:
        st.number_input("Timeout (s)", min_value=0.1, max_value=900.0, step=1.0, key="form_timeout", format="%.1f")
        field_error("timeout_s")
    with cols[1]:
        st.number_input("Memory (MiB)", min_value=32, max_value=4096, step=32, key="form_memory")
        field_error("memory_mb")
    with cols[2]:
        st.number_input("CPUs", min_value=0.05, max_value=8.0, step=0.05, key="form_cpus", format="%.2f")
        field_error("cpus")


def scaling() -> None:
    cols = st.columns(3)
    with cols[0]:
        st.number_input(
            "Min warm", min_value=0, max_value=100, step=1, key="form_min_warm", help="instances kept started"
        )
        field_error("min_warm")
    with cols[1]:
        st.number_input("Max instances", min_value=1, max_value=1000, step=1, key="form_max_instances")
        field_error("max_instances")
    with cols[2]:
        st.number_input("Concurrency per instance", min_value=1, max_value=1000, step=1, key="form_concurrency")
        field_error("concurrency")


def isolation(backends: list[dict[str, Any]]) -> None:
    """The backend (each labelled with why it is unavailable, if it is) and network access."""
    cols = st.columns(3)
    by_name = {b["name"]: b for b in backends}
    options = list(by_name) or [S.form_backend]
    if S.form_backend not in options:
        options.append(S.form_backend)

    def backend_label(name: str) -> str:
        info = by_name.get(name, {})
        if info and not info.get("available"):
            return f"{name} (unavailable: {info.get('reason')})"
        return f"{name} (default)" if info.get("default") else name

    with cols[0]:
        st.selectbox(
            "Backend", options, key="form_backend", format_func=backend_label, help="isolation: see GET /api/backends"
        )
        field_error("backend")
    with cols[1]:
        st.write("")
        st.checkbox(
            "Network access",
            key="form_network",
            help="docker only; gvisor refuses it. Needs the admin key, or a user key whose user has allow_network",
        )
        field_error("network")


def environment() -> None:
    st.markdown("**Environment variables**")
    if not S.form_env_rows:
        st.caption("None. Names: letters, digits and `_`, not starting with a digit or `HEARTH_`.")
    for row in S.form_env_rows:
        cols = st.columns([4, 6, 1])
        cols[0].text_input("Name", key=f"form_env_k_{row}", placeholder="NAME", label_visibility="collapsed")
        cols[1].text_input("Value", key=f"form_env_v_{row}", placeholder="value", label_visibility="collapsed")
        cols[2].button("✕", key=f"form_env_rm_{row}", on_click=state.remove_env, args=(row,), help="remove")
    st.button("Add variable", icon=":material/add:", key="form_env_add", on_click=state.add_env)
    field_error("env")


def batching() -> None:
    st.markdown("**Batching**")
    st.checkbox(
        "Batch requests", key="form_batch_on", help="group pending invocations into one round trip to one instance"
    )
    if S.form_batch_on:
        cols = st.columns(3)
        cols[0].number_input("Max batch size", min_value=1, max_value=1000, step=1, key="form_batch_size")
        cols[1].number_input("Max wait (ms)", min_value=0.0, max_value=10000.0, step=1.0, key="form_batch_wait")
        with cols[2]:
            st.write("")
            st.checkbox("Batch handler", key="form_batch_handler", help="call the handler once with the list")
    field_error("batch")


def async_and_schedule(fields: Collection[str]) -> None:
    """Async retries and cron schedules, where this API has them."""
    if "retries" not in fields and "schedule" not in fields:
        return
    st.markdown("**Async and schedule**")
    cols = st.columns([1, 2])
    if "retries" in fields:
        cols[0].number_input(
            "Async retries",
            min_value=0,
            max_value=10,
            step=1,
            key="form_retries",
            placeholder="default",
            help="retries after a failure of an async call",
        )
        with cols[0]:
            field_error("retries")
    if "schedule" in fields:
        cols[1].text_area("Schedule (cron, one per line)", key="form_schedule", height=80, placeholder="*/5 * * * *")
        with cols[1]:
            field_error("schedule")
