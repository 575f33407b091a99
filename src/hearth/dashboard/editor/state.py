"""The form's state in Streamlit's session state: `form_*` keys, one set per target ("new" or
"edit:<name>:<version>"), loaded from the function being edited and changed by the widgets' callbacks."""

from __future__ import annotations

import itertools
from typing import Any

import streamlit as st

from hearth.dashboard.editor.body import DEFAULT_RUNTIME, FormValues, Loaded
from hearth.dashboard.templates import TEMPLATES, default_template

S = st.session_state
LANGUAGES = ["python", "javascript", "provided"]
# The `runtime` choices per language (GET /api/runtimes lists what this host runs); "default": the language's.
RUNTIMES = {
    "python": [DEFAULT_RUNTIME, "python3.11", "python3.13"],
    "javascript": [DEFAULT_RUNTIME, "nodejs18.x", "nodejs20.x"],
    "provided": [DEFAULT_RUNTIME, "provided"],
}
ALL_TEMPLATES = {code for per_language in TEMPLATES.values() for code in per_language.values()}
_ids = itertools.count(1)


def set_code(code: str) -> None:
    S.form_code = code
    S.form_editor_seed = code
    S.form_editor_nonce = S.get("form_editor_nonce", 0) + 1


def _set_env(env: dict[str, str]) -> None:
    S.form_env_rows = []
    for key, value in env.items():
        row = next(_ids)
        S.form_env_rows.append(row)
        S[f"form_env_k_{row}"], S[f"form_env_v_{row}"] = key, value


def load(function: dict[str, Any] | None, default_backend: str) -> None:
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
    set_code(f.get("code") or (TEMPLATES[language][S.form_template] if function is None else ""))
    _set_env(f.get("env") or {})
    S.form_errors = {}
    S.form_confirm_delete = False


def load_once(target: str, function: dict[str, Any] | None, default_backend: str) -> None:
    """Load the form when its target changed (another function or version, or New after Edit)."""
    if S.get("form_target") != target or "form_name" not in S:
        load(function, default_backend)
        S.form_target = target
        S.form_loaded_language = S.form_language


def values() -> FormValues:
    return FormValues(
        name=S.form_name,
        description=S.form_description,
        language=S.form_language,
        runtime=S.form_runtime,
        code=S.form_code,
        handler=S.form_handler,
        route=S.form_route,
        timeout_s=S.form_timeout,
        memory_mb=S.form_memory,
        cpus=S.form_cpus,
        env=tuple((S.get(f"form_env_k_{row}") or "", S.get(f"form_env_v_{row}") or "") for row in S.form_env_rows),
        backend=S.form_backend,
        min_warm=S.form_min_warm,
        max_instances=S.form_max_instances,
        concurrency=S.form_concurrency,
        auth=S.form_auth,
        network=S.form_network,
        batch_on=S.form_batch_on,
        batch_size=S.form_batch_size,
        batch_wait_ms=S.form_batch_wait,
        batch_handler=S.form_batch_handler,
        retries=S.form_retries,
        schedule=S.form_schedule,
        http_payload_format=S.form_payload_format,
    )


def loaded() -> Loaded:
    return Loaded(S.get("form_loaded") or {}, S.form_loaded_code, S.form_loaded_language)


def errors() -> dict[str, str]:
    return S.get("form_errors", {})  # type: ignore[no-any-return]


# ----- widget callbacks
def on_language() -> None:
    S.form_template = default_template(S.form_language)
    S.form_runtime = DEFAULT_RUNTIME
    if S.get("form_target") == "new" and (not S.form_code.strip() or S.form_code in ALL_TEMPLATES):
        set_code(TEMPLATES[S.form_language][S.form_template])


def on_template() -> None:
    set_code(TEMPLATES[S.form_language][S.form_template])


def on_plain() -> None:
    set_code(S.form_code)  # the other editor starts from the current text


def add_env() -> None:
    S.form_env_rows = [*S.form_env_rows, next(_ids)]


def remove_env(row: int) -> None:
    S.form_env_rows = [r for r in S.form_env_rows if r != row]
