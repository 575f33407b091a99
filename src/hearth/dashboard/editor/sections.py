"""The New / Edit function form: every field of the API, the API's validation errors next to each field."""

from __future__ import annotations

import itertools
from typing import Any

import streamlit as st

from hearth.dashboard import ui
from hearth.dashboard.api import DashboardError, HearthApi
from hearth.dashboard.templates import TEMPLATES, default_template

try:  # a maintained Ace-based component (bundled, works offline); a plain text area otherwise
    from code_editor import code_editor
except ImportError:  # pragma: no cover - it is a dependency; kept so a broken install still deploys
    code_editor = None

S = st.session_state
LANGUAGES = ["python", "javascript", "provided"]
ACE_MODES = {"provided": "sh"}  # a provided function's one file is its `bootstrap` (a script)
# The `runtime` choices per language (GET /api/runtimes lists what this host runs); "default": the language's.
DEFAULT_RUNTIME = "default"
RUNTIMES = {
    "python": [DEFAULT_RUNTIME, "python3.11", "python3.13"],
    "javascript": [DEFAULT_RUNTIME, "nodejs18.x", "nodejs20.x"],
    "provided": [DEFAULT_RUNTIME, "provided"],
}
FIELDS = (
    "name",
    "description",
    "language",
    "runtime",
    "code",
    "handler",
    "route",
    "timeout_s",
    "memory_mb",
    "cpus",
    "env",
    "backend",
    "min_warm",
    "max_instances",
    "concurrency",
    "auth",
    "network",
    "batch",
    "retries",
    "schedule",
    "http_payload_format",
)
ALL_TEMPLATES = {code for per_language in TEMPLATES.values() for code in per_language.values()}
_ids = itertools.count(1)


# ----- state: one dict of form values per target ("new" or "edit:<name>:<version>")
def _set_code(code: str) -> None:
    S.form_code = code
    S.form_editor_seed = code
    S.form_editor_nonce = S.get("form_editor_nonce", 0) + 1


def _set_env(env: dict[str, str]) -> None:
    S.form_env_rows = []
    for key, value in env.items():
        row = next(_ids)
        S.form_env_rows.append(row)
        S[f"form_env_k_{row}"], S[f"form_env_v_{row}"] = key, value


def _load(function: dict[str, Any] | None, default_backend: str) -> None:
    f = function or {}
    language = f.get("language", "python")
    batch = f.get("batch") or {}
    S.form_name = f.get("name", "")
    S.form_description = f.get("description", "")
    S.form_language = language
    S.form_runtime = f.get("runtime") or DEFAULT_RUNTIME
    S.form_template = default_template(language)
    S.form_handler = f.get("handler", "handler")
    S.form_route = f.get("route", "")
    S.form_timeout = float(f.get("timeout_s", 30.0))
    S.form_memory = int(f.get("memory_mb", 128))
    S.form_cpus = float(f.get("cpus", 0.5))
    S.form_backend = f.get("backend", default_backend)
    S.form_min_warm = int(f.get("min_warm", 0))
    S.form_max_instances = int(f.get("max_instances", 10))
    S.form_concurrency = int(f.get("concurrency", 1))
    S.form_auth = f.get("auth", "public")
    S.form_payload_format = f.get("http_payload_format", "2.0")
    S.form_network = bool(f.get("network", False))
    S.form_batch_on = bool(batch)
    S.form_batch_size = int(batch.get("max_size", 8))
    S.form_batch_wait = float(batch.get("max_wait_ms", 5.0))
    S.form_batch_handler = bool(batch.get("batch_handler", False))
    S.form_retries = f.get("retries")
    S.form_schedule = "\n".join(f.get("schedule") or [])
    S.form_loaded_code = f.get("code")
    S.form_loaded = f
    _set_code(f.get("code") or (TEMPLATES[language][S.form_template] if function is None else ""))
    _set_env(f.get("env") or {})
    S.form_errors = {}
    S.form_confirm_delete = False


def _on_language() -> None:
    S.form_template = default_template(S.form_language)
    S.form_runtime = DEFAULT_RUNTIME
    if S.get("form_target") == "new" and (not S.form_code.strip() or S.form_code in ALL_TEMPLATES):
        _set_code(TEMPLATES[S.form_language][S.form_template])


def _on_template() -> None:
    _set_code(TEMPLATES[S.form_language][S.form_template])


def _on_plain() -> None:
    _set_code(S.form_code)  # the other editor starts from the current text


def _add_env() -> None:
    S.form_env_rows = [*S.form_env_rows, next(_ids)]


def _remove_env(row: int) -> None:
    S.form_env_rows = [r for r in S.form_env_rows if r != row]


# ----- rendering
def _field_error(field: str) -> None:
    message = S.get("form_errors", {}).get(field)
    if message:
        st.error(f"{field}: {message}", icon=":material/error:")


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


def _env_editor() -> None:
    st.markdown("**Environment variables**")
    if not S.form_env_rows:
        st.caption("None. Names: letters, digits and `_`, not starting with a digit or `HEARTH_`.")
    for row in S.form_env_rows:
        cols = st.columns([4, 6, 1])
        cols[0].text_input("Name", key=f"form_env_k_{row}", placeholder="NAME", label_visibility="collapsed")
        cols[1].text_input("Value", key=f"form_env_v_{row}", placeholder="value", label_visibility="collapsed")
        cols[2].button("✕", key=f"form_env_rm_{row}", on_click=_remove_env, args=(row,), help="remove")
    st.button("Add variable", icon=":material/add:", key="form_env_add", on_click=_add_env)
    _field_error("env")


def _env_value() -> dict[str, str]:
    env: dict[str, str] = {}
    for row in S.form_env_rows:
        key = (S.get(f"form_env_k_{row}") or "").strip()
        if key:
            env[key] = S.get(f"form_env_v_{row}") or ""
    return env


def _body(fields: set[str], *, create: bool) -> dict[str, Any]:
    name = S.form_name.strip()
    body: dict[str, Any] = {
        "language": S.form_language,
        "description": S.form_description,
        "handler": S.form_handler.strip() or "handler",
        "route": S.form_route.strip() or f"/{name}",
        "timeout_s": S.form_timeout,
        "memory_mb": S.form_memory,
        "cpus": S.form_cpus,
        "env": _env_value(),
        "backend": S.form_backend,
        "min_warm": S.form_min_warm,
        "max_instances": S.form_max_instances,
        "concurrency": S.form_concurrency,
        "auth": S.form_auth,
        "network": S.form_network,
        "batch": {
            "max_size": S.form_batch_size,
            "max_wait_ms": S.form_batch_wait,
            "batch_handler": S.form_batch_handler,
        }
        if S.form_batch_on
        else None,
    }
    if "runtime" in fields:
        body["runtime"] = None if S.form_runtime == DEFAULT_RUNTIME else S.form_runtime
    if "retries" in fields:
        body["retries"] = S.form_retries
    if "http_payload_format" in fields:
        body["http_payload_format"] = S.form_payload_format
    if "schedule" in fields:
        lines = [line.strip() for line in S.form_schedule.splitlines() if line.strip()]
        body["schedule"] = lines or None
    if create:
        body["name"] = name
        body["code"] = S.form_code
        return {k: v for k, v in body.items() if v is not None}
    if S.form_code.strip() and (S.form_code != S.form_loaded_code or S.form_language != S.form_loaded_language):
        body["code"] = S.form_code
    # PATCH only what changed: an unrelated edit must not trip over, say, a backend that became unavailable
    loaded = S.get("form_loaded") or {}
    return {k: v for k, v in body.items() if k == "code" or k not in loaded or loaded[k] != v}


def _errors_by_field(error: DashboardError) -> dict[str, str]:
    out: dict[str, str] = {}
    for field, message in error.fields.items():
        head = field.split(".")[0]
        head = head if head in FIELDS else "_general"
        out[head] = (
            f"{out[head]}; {message}" if head in out else (message if head != "_general" else f"{field}: {message}")
        )
    if not out:
        out["_general"] = error.message
    return out


def _submit(api: HearthApi, fields: set[str], *, create: bool) -> None:
    try:
        if create:
            saved = api.create(_body(fields, create=True))
        else:
            changes = _body(fields, create=False)
            if not changes:
                st.info("Nothing changed: no new version was made.")
                return
            saved = api.patch(S.form_name, changes)
    except DashboardError as exc:
        if exc.unreachable or exc.unauthorized:
            ui.show_error(exc)
            return
        S.form_errors = _errors_by_field(exc)
        S.form_error_message = exc.message
        st.rerun()
    S.form_errors = {}
    if create:
        S.flash = f"Created **{saved['name']}**, version {saved['version']}."
        st.switch_page(str(ui.VIEWS / "detail.py"), query_params={"function": saved["name"]})
    S.flash = f"Saved **{saved['name']}**: now version {saved['version']}."
    S.form_target = None  # reload the form from the new version
    st.rerun()


def _delete(api: HearthApi, name: str) -> None:
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
        names = [f["name"] for f in ui.guarded(api.functions)]
        if not names:
            st.title("Edit function")
            st.info("No functions yet.")
            st.page_link(str(ui.VIEWS / "new.py"), label="Create a function", icon=":material/add_circle:")
            return
        wanted = ui.query_function()
        index = names.index(wanted) if wanted in names else 0
        name = st.selectbox("Function", names, index=index, key=f"form_pick_{names[index]}")
        if name != wanted:
            st.query_params["function"] = name
        function = ui.guarded(lambda: api.function(name))
        target = f"edit:{name}:{function['version']}"
        st.title(f"Edit {name}")
        st.caption(
            f"Version **{function['version']}** · updated {function['updated_at']} · "
            f"code {function['code_size']} bytes · sha256 `{function['code_sha256'][:12]}`"
        )
    if S.get("form_target") != target or "form_name" not in S:
        _load(function, default_backend)
        S.form_target = target
        S.form_loaded_language = S.form_language

    general = S.get("form_errors", {}).get("_general")
    if general:
        st.error(general, icon=":material/error:")
    elif S.get("form_errors"):
        st.error(f"Hearth rejected the function: {S.get('form_error_message', '')}", icon=":material/error:")

    top = st.columns([3, 2, 3])
    top[0].text_input(
        "Name",
        key="form_name",
        disabled=not create,
        max_chars=63,
        help="lowercase letters, digits and '-'; the URL and API name of the function",
    )
    with top[0]:
        _field_error("name")
    top[1].selectbox("Language", LANGUAGES, key="form_language", on_change=_on_language)
    with top[1]:
        _field_error("language")
    if S.get("form_runtime") not in RUNTIMES[S.form_language]:
        S.form_runtime = DEFAULT_RUNTIME
    top[1].selectbox(
        "Runtime",
        RUNTIMES[S.form_language],
        key="form_runtime",
        help="the version: python3.11 / nodejs18.x are Debian bookworm's, python3.13 / nodejs20.x trixie's",
    )
    with top[1]:
        _field_error("runtime")
    if create:
        top[2].selectbox(
            "Starter template", list(TEMPLATES[S.form_language]), key="form_template", on_change=_on_template
        )
    st.text_input("Description", key="form_description", max_chars=1024)
    _field_error("description")

    bundle = function is not None and function.get("code") is None
    if bundle:
        st.info(
            f"Deployed as a zip bundle ({', '.join(function.get('files') or [])}); its code is changed "
            "with `hearth deploy`, the settings here."
        )
    else:
        st.toggle(
            "Plain text editor",
            key="form_plain",
            on_change=_on_plain,
            help="a plain text area instead of the code editor",
        )
        _code_input(disabled=False)
        _field_error("code")

    st.subheader("Settings")
    cols = st.columns(3)
    with cols[0]:
        st.text_input("Handler", key="form_handler", help="function name in the file, or module.function")
        _field_error("handler")
    with cols[1]:
        st.text_input(
            "Route",
            key="form_route",
            placeholder=f"/{S.form_name or '<name>'}",
            help="HTTP trigger path under /fn; empty = /<name>",
        )
        _field_error("route")
    with cols[2]:
        st.selectbox(
            "HTTP trigger auth",
            ["public", "key"],
            key="form_auth",
            help="key: the trigger needs an invoke key of the owner",
        )
        _field_error("auth")
        if "http_payload_format" in fields:
            st.selectbox(
                "HTTP event format",
                ["2.0", "1.0"],
                key="form_payload_format",
                help="the event the trigger delivers: AWS payload format 2.0 (function URL, HTTP API) "
                "or 1.0 (API Gateway proxy event)",
            )
            _field_error("http_payload_format")

    cols = st.columns(3)
    with cols[0]:
        st.number_input("Timeout (s)", min_value=0.1, max_value=900.0, step=1.0, key="form_timeout", format="%.1f")
        _field_error("timeout_s")
    with cols[1]:
        st.number_input("Memory (MiB)", min_value=32, max_value=4096, step=32, key="form_memory")
        _field_error("memory_mb")
    with cols[2]:
        st.number_input("CPUs", min_value=0.05, max_value=8.0, step=0.05, key="form_cpus", format="%.2f")
        _field_error("cpus")

    cols = st.columns(3)
    with cols[0]:
        st.number_input(
            "Min warm", min_value=0, max_value=100, step=1, key="form_min_warm", help="instances kept started"
        )
        _field_error("min_warm")
    with cols[1]:
        st.number_input("Max instances", min_value=1, max_value=1000, step=1, key="form_max_instances")
        _field_error("max_instances")
    with cols[2]:
        st.number_input("Concurrency per instance", min_value=1, max_value=1000, step=1, key="form_concurrency")
        _field_error("concurrency")

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
        _field_error("backend")
    with cols[1]:
        st.write("")
        st.checkbox(
            "Network access",
            key="form_network",
            help="docker only; gvisor refuses it. Needs the admin key, or a user key whose user has allow_network",
        )
        _field_error("network")

    _env_editor()

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
    _field_error("batch")

    if "retries" in fields or "schedule" in fields:
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
                _field_error("retries")
        if "schedule" in fields:
            cols[1].text_area(
                "Schedule (cron, one per line)", key="form_schedule", height=80, placeholder="*/5 * * * *"
            )
            with cols[1]:
                _field_error("schedule")

    st.divider()
    label = "Create function" if create else "Save (new version)"
    if st.button(label, type="primary", icon=":material/rocket_launch:", key="form_submit"):
        _submit(api, fields, create=create)
    if not create and function is not None:
        cols = st.columns([2, 8])
        cols[0].page_link(
            str(ui.VIEWS / "detail.py"),
            label="Open its page",
            icon=":material/query_stats:",
            query_params={"function": function["name"]},
        )
        st.subheader("Danger zone")
        _delete(api, function["name"])
