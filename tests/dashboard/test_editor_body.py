"""The New / Edit form's request bodies and error placement (hearth.dashboard.editor.body): pure
functions, no browser and no server."""

from __future__ import annotations

from typing import Any

import pytest

from hearth.dashboard.editor.body import (
    DEFAULT_RUNTIME,
    GENERAL,
    FormValues,
    Loaded,
    create_body,
    errors_by_field,
    patch_body,
    settings_body,
)
from hearth.dashboard.editor.state import LANGUAGES, RUNTIMES
from hearth.images import catalog

EVERY_FIELD = {"runtime", "retries", "schedule", "http_payload_format"}  # what the current API offers
CODE = "def handler(event, context):\n    return event\n"


def form(**changes: Any) -> FormValues:
    return FormValues(**{"name": "hello", "language": "python", "code": CODE, "backend": "docker", **changes})


def test_create_body_carries_every_field() -> None:
    values = FormValues(
        name=" hello ",
        description="says hello",
        language="javascript",
        runtime="nodejs20.x",
        code="exports.handler = async () => 1;",
        handler=" index.handler ",
        route=" /greet ",
        timeout_s=12.5,
        memory_mb=256,
        cpus=1.25,
        env=(("GREETING", "hi"),),
        backend="gvisor",
        min_warm=1,
        max_instances=4,
        concurrency=2,
        auth="key",
        network=True,
        batch_on=True,
        batch_size=16,
        batch_wait_ms=2.5,
        batch_handler=True,
        retries=3,
        schedule="*/5 * * * *",
        http_payload_format="1.0",
    )
    assert create_body(values, EVERY_FIELD) == {
        "name": "hello",
        "description": "says hello",
        "language": "javascript",
        "runtime": "nodejs20.x",
        "code": "exports.handler = async () => 1;",
        "handler": "index.handler",
        "route": "/greet",
        "timeout_s": 12.5,
        "memory_mb": 256,
        "cpus": 1.25,
        "env": {"GREETING": "hi"},
        "backend": "gvisor",
        "min_warm": 1,
        "max_instances": 4,
        "concurrency": 2,
        "auth": "key",
        "network": True,
        "batch": {"max_size": 16, "max_wait_ms": 2.5, "batch_handler": True},
        "retries": 3,
        "schedule": ["*/5 * * * *"],
        "http_payload_format": "1.0",
    }


def test_create_body_leaves_unset_fields_to_the_api() -> None:
    body = create_body(form(handler="  ", route=""), EVERY_FIELD)
    assert body["handler"] == "handler" and body["route"] == "/hello"
    for absent in ("runtime", "batch", "retries", "schedule"):  # default runtime, no batching, no retries, no cron
        assert absent not in body, absent
    assert body["http_payload_format"] == "2.0"


def test_fields_the_api_does_not_offer_are_never_sent() -> None:
    values = form(runtime="python3.13", retries=2, schedule="@hourly", http_payload_format="1.0")
    body = create_body(values, set())
    assert not {"runtime", "retries", "schedule", "http_payload_format"} & set(body)
    assert patch_body(values, set(), Loaded({}, CODE, "python")).keys().isdisjoint(EVERY_FIELD)


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_runtime_choice_is_a_catalog_runtime_of_its_language(language: str) -> None:
    for runtime in RUNTIMES[language]:
        body = create_body(form(language=language, runtime=runtime), EVERY_FIELD)
        assert body["language"] == language
        if runtime == DEFAULT_RUNTIME:
            assert "runtime" not in body  # the server picks the language's default
        else:
            assert body["runtime"] == runtime and catalog.language_of(runtime) == language


def test_env_rows_become_a_mapping() -> None:
    rows = (("  A ", "1"), ("", "ignored"), ("   ", "ignored too"), ("B", ""), ("A", "2"))
    assert create_body(form(env=rows), EVERY_FIELD)["env"] == {"A": "2", "B": ""}


def test_schedule_is_one_expression_per_non_blank_line() -> None:
    body = create_body(form(schedule="  */5 * * * *  \n\n@daily\n   \n"), EVERY_FIELD)
    assert body["schedule"] == ["*/5 * * * *", "@daily"]


def test_patch_body_holds_only_what_changed() -> None:
    loaded_values = form()
    record = {**settings_body(loaded_values, EVERY_FIELD), "name": "hello", "code": CODE, "version": 3}
    loaded = Loaded(record, CODE, "python")  # the function as GET /api/functions/hello gave it
    assert patch_body(loaded_values, EVERY_FIELD, loaded) == {}
    assert patch_body(form(memory_mb=512), EVERY_FIELD, loaded) == {"memory_mb": 512}
    assert patch_body(form(env=(("K", "v"),)), EVERY_FIELD, loaded) == {"env": {"K": "v"}}
    assert patch_body(form(code=CODE + "# edited\n"), EVERY_FIELD, loaded) == {"code": CODE + "# edited\n"}
    assert patch_body(form(schedule="@daily"), EVERY_FIELD, loaded) == {"schedule": ["@daily"]}
    # a setting the loaded version does not have (an older version's record) is sent
    older = Loaded({k: v for k, v in loaded.function.items() if k != "auth"}, CODE, "python")
    assert patch_body(loaded_values, EVERY_FIELD, older) == {"auth": "public"}


def test_patch_body_sends_the_code_again_when_the_language_changed() -> None:
    loaded = Loaded(settings_body(form(), EVERY_FIELD), CODE, "python")
    changed = patch_body(form(language="javascript"), EVERY_FIELD, loaded)
    assert changed == {"language": "javascript", "code": CODE}


def test_patch_body_never_sends_a_bundles_empty_code() -> None:
    loaded = Loaded(settings_body(form(code=""), EVERY_FIELD), None, "python")  # a zip bundle: no code in the form
    assert patch_body(form(code="", timeout_s=5.0), EVERY_FIELD, loaded) == {"timeout_s": 5.0}


def test_errors_are_placed_under_their_form_field() -> None:
    errors = errors_by_field(
        {"batch.max_size": "must be at most 1000", "batch.max_wait_ms": "too long", "memory_mb": "too small"},
        "invalid function",
    )
    assert errors == {"batch": "must be at most 1000; too long", "memory_mb": "too small"}


def test_errors_of_no_form_field_and_bare_errors_are_general() -> None:
    errors = errors_by_field({"body": "not JSON", "quota": "max_functions reached"}, "rejected")
    assert errors == {GENERAL: "body: not JSON; max_functions reached"}
    assert errors_by_field({}, "backend unavailable") == {GENERAL: "backend unavailable"}
