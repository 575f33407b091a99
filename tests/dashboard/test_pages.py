"""The dashboard's pages (Streamlit's AppTest) against a real Hearth server with real Docker sandboxes."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from hearth.testing import HearthServer, free_port

CODE = """def handler(event, context):
    import os
    print("dashboard says", event.get("who"))
    return {"hi": event.get("who"), "color": os.environ.get("COLOR"), "version": context.function_version}
"""


# ----- helpers over AppTest's element tree
def by_label(widgets: Any, label: str) -> Any:
    found = [w for w in widgets if w.label == label]
    assert found, f"no widget labelled {label!r} in {[w.label for w in widgets]}"
    return found[0]


def texts(elements: Any) -> list[str]:
    return [str(e.value) for e in elements]


def block_with(at: AppTest, label: str) -> Any:
    """The innermost column holding the widget labelled `label` (where its error is shown)."""
    for column in at.columns:
        if any(w.label == label for w in [*column.text_input, *column.selectbox, *column.number_input]):
            return column
    raise AssertionError(f"no column holds {label!r}")


def figures(at: AppTest) -> dict[str, dict[str, Any]]:
    """Plotly charts on the page, by title: {title: figure JSON}."""
    out = {}
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        out[spec["layout"]["title"]["text"]] = spec
    return out


def total(figure: dict[str, Any], trace: int = 0) -> float:
    return sum(v or 0 for v in figure["data"][trace]["y"])


def fill_new_function(at: AppTest, name: str, code: str = CODE) -> AppTest:
    by_label(at.text_input, "Name").input(name)
    at.toggle(key="form_plain").set_value(True).run()  # a plain text area for the code (AppTest can't type into Ace)
    by_label(at.text_area, "Code").input(code)
    return at


def env_inputs(at: AppTest) -> tuple[list[Any], list[Any]]:
    keys = [w for w in at.text_input if (w.key or "").startswith("form_env_k_")]
    values = [w for w in at.text_input if (w.key or "").startswith("form_env_v_")]
    return keys, values


# ----- tests
def test_create_through_the_form_then_invoke_from_the_test_panel(
    open_page: Any, dashboard_env: HearthServer, fname: str
) -> None:
    at = open_page("new")
    assert texts(at.title) == ["New function"]
    # a starter template is loaded; the API's backends are offered
    assert "def handler" in at.session_state["form_code"]
    assert "docker (default)" in at.selectbox(key="form_backend").options

    fill_new_function(at, fname)
    at.button(key="form_env_add").click().run()
    keys, values = env_inputs(at)
    keys[0].input("COLOR")
    values[0].input("teal")
    by_label(at.number_input, "Memory (MiB)").set_value(160)
    at.checkbox(key="form_batch_on").check().run()
    by_label(at.number_input, "Max batch size").set_value(4)
    by_label(at.number_input, "Max wait (ms)").set_value(2.0)
    at.button(key="form_submit").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, texts(at.error)

    # the API has exactly what the form said
    function = dashboard_env.client.get(f"/api/functions/{fname}").json()
    assert function["version"] == 1
    assert function["env"] == {"COLOR": "teal"}
    assert function["memory_mb"] == 160
    assert function["batch"] == {"max_size": 4, "max_wait_ms": 2.0, "batch_handler": False}
    assert function["code"] == CODE

    # and the app moved on to the function's page
    assert texts(at.title) == [fname]
    assert any(f"Created **{fname}**, version 1" in s for s in texts(at.success))
    assert at.query_params["function"] == fname
    at.switch_page("views/detail.py")  # AppTest would rerun the page it was told last; a browser stays here

    by_label(at.text_area, "Event (JSON)").input('{"who": "apptest"}')
    at.button(key=f"invoke_{fname}").click().run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    assert "**200 OK**" in texts(at.success)
    result = json.loads(at.code[0].value)
    assert result == {"hi": "apptest", "color": "teal", "version": "1"}
    assert any("dashboard says apptest" in c for c in texts(at.code))  # the invocation's stdout
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Start"] in ("cold", "warm")
    assert metrics["Version"] == "1"

    # the invocation is in the live charts and in the recent invocations
    charts = figures(at)
    assert total(charts["Request volume"]) == 1
    assert metrics["Invocations"] == "1"
    invocations = at.dataframe[0].value
    assert list(invocations["status"]) == ["ok"]


def test_validation_errors_are_shown_next_to_their_fields(open_page: Any, dashboard_env: HearthServer) -> None:
    at = open_page("new")
    fill_new_function(at, "Not A Name!")
    at.button(key="form_env_add").click().run()
    keys, values = env_inputs(at)
    keys[0].input("HEARTH_SECRET")
    values[0].input("x")
    at.button(key="form_submit").click().run()
    assert not at.exception

    name_errors = texts(block_with(at, "Name").error)
    assert len(name_errors) == 1 and name_errors[0].startswith("name:"), name_errors
    assert any("HEARTH_" in e and e.startswith("env:") for e in texts(at.error)), texts(at.error)
    assert texts(at.title) == ["New function"]  # still on the form, with what was typed
    assert at.text_input(key="form_name").value == "Not A Name!"

    # a taken name (409) is shown at the name too
    dashboard_env.deploy("dash-taken", CODE)
    at.text_input(key="form_name").input("dash-taken")
    keys, _ = env_inputs(at)
    keys[0].input("OK_NAME")
    at.button(key="form_submit").click().run()
    name_errors = texts(block_with(at, "Name").error)
    assert any("already exists" in e for e in name_errors), name_errors
    assert not any(e.startswith("env:") for e in texts(at.error))


def test_edit_makes_a_new_version_and_delete_asks_first(
    open_page: Any, dashboard_env: HearthServer, fname: str
) -> None:
    dashboard_env.deploy(fname, CODE, env={"COLOR": "red"})
    at = open_page("edit", function=fname)
    assert texts(at.title) == [f"Edit {fname}"]
    assert any("Version **1**" in c for c in texts(at.caption))
    keys, values = env_inputs(at)
    assert [k.value for k in keys] == ["COLOR"] and [v.value for v in values] == ["red"]

    at.button(key="form_submit").click().run()
    assert any("Nothing changed" in i for i in texts(at.info))
    assert dashboard_env.client.get(f"/api/functions/{fname}").json()["version"] == 1

    by_label(at.number_input, "Timeout (s)").set_value(12.5)
    env_inputs(at)[1][0].input("blue")
    at.button(key="form_submit").click().run()
    assert not at.error, texts(at.error)
    assert any("now version 2" in s for s in texts(at.success))
    assert any("Version **2**" in c for c in texts(at.caption))
    function = dashboard_env.client.get(f"/api/functions/{fname}").json()
    assert (function["version"], function["timeout_s"], function["env"]) == (2, 12.5, {"COLOR": "blue"})
    assert function["code"] == CODE  # unchanged code is kept

    # delete: asks, cancel keeps it, confirm deletes it
    at.button(key="form_delete").click().run()
    assert any("cannot be undone" in w for w in texts(at.warning))
    assert dashboard_env.client.get(f"/api/functions/{fname}").status_code == 200
    at.button(key="form_delete_cancel").click().run()
    assert dashboard_env.client.get(f"/api/functions/{fname}").status_code == 200
    at.button(key="form_delete").click().run()
    at.button(key="form_delete_confirm").click().run()
    assert dashboard_env.client.get(f"/api/functions/{fname}").status_code == 404
    assert texts(at.title) == ["Functions"]
    assert any(f"Deleted **{fname}**" in s for s in texts(at.success))


def test_functions_table_has_last_hour_figures_and_filters(
    open_page: Any, dashboard_env: HearthServer, fname: str
) -> None:
    dashboard_env.deploy(fname, CODE, language="python")
    for who in ("a", "b", "c"):
        assert dashboard_env.invoke(fname, {"who": who}).status_code == 200
    # The records reach the store from the recorder's write-behind buffer (flushed every
    # HEARTH_INVOCATION_FLUSH_INTERVAL_S): the page reads the store.
    deadline = time.monotonic() + 30
    while len(dashboard_env.client.get("/api/invocations", params={"function": fname}).json()["invocations"]) < 3:
        assert time.monotonic() < deadline, "the three invocations were never recorded"
        time.sleep(0.2)

    at = open_page("functions")
    assert not at.warning, texts(at.warning)  # "Metrics unavailable: ..." would leave the figures at 0
    table = at.dataframe[0].value
    row = table[table["name"] == fname].iloc[0]
    assert row["invocations (1h)"] == 3
    assert row["errors (1h)"] == 0
    assert row["version"] == 1
    assert row["route"] == f"/fn/{fname}"
    assert row["details"] == f"function?function={fname}"

    at.text_input(key="fn_search").input(fname).run()
    assert list(at.dataframe[0].value["name"]) == [fname]
    at.text_input(key="fn_search").input("no-such-function-anywhere").run()
    assert at.dataframe[0].value.empty


def test_detail_shows_errors_and_version_history(open_page: Any, dashboard_env: HearthServer, fname: str) -> None:
    dashboard_env.deploy(fname, "def handler(event, context):\n    raise ValueError('nope')\n")
    dashboard_env.client.patch(f"/api/functions/{fname}", json={"memory_mb": 96})
    at = open_page("detail", function=fname)
    at.button(key=f"invoke_{fname}").click().run(timeout=120)
    assert any("500 ValueError" in e for e in texts(at.error)), texts(at.error)
    assert any("nope" in c for c in texts(at.code))  # the traceback
    charts = figures(at)
    assert total(charts["Request volume"]) == 1
    rates = [v for v in charts["Error rate"]["data"][0]["y"] if v is not None]
    assert rates == [100.0]
    versions = at.dataframe[-1].value
    assert list(versions["version"]) == [2, 1]
    assert list(versions["memory (MiB)"]) == [96, 128]


def test_overview_shows_platform_totals_and_charts(open_page: Any, dashboard_env: HearthServer, fname: str) -> None:
    dashboard_env.deploy(fname, CODE)
    assert dashboard_env.invoke(fname, {"who": "x"}).status_code == 200
    summary = dashboard_env.client.get("/api/metrics/summary", params={"window": "1h"}).json()
    at = open_page("overview")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Functions"] == str(summary["platform"]["functions"])
    assert int(metrics["Invocations"]) >= 1
    charts = figures(at)
    assert set(charts) >= {
        "Request volume",
        "Latency (p50 / p95 / p99)",
        "Error rate",
        "Cold starts",
        "Host CPU",
        "Host memory",
    }
    assert total(charts["Request volume"]) == int(metrics["Invocations"])
    busiest = at.dataframe[0].value  # the 20 busiest functions of the shared server
    shown = dict(zip(busiest["function"], busiest["invocations"], strict=True))
    assert 1 <= len(shown) <= 20
    counts = {r["function"]: r["invocations"] for r in summary["functions"]}
    if fname not in shown:  # only if 20 other functions were busier
        assert len(shown) == 20 and min(shown.values()) >= counts.get(fname, 1)


@pytest.mark.parametrize("page", ["overview", "functions", "detail", "new", "edit"])
def test_unreachable_api_is_a_message_not_a_traceback(
    page: str, open_page: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()  # nothing listens there
    monkeypatch.setenv("HEARTH_API_URL", f"http://127.0.0.1:{port}")
    at = open_page(page)
    assert not at.exception
    assert any("Cannot reach the Hearth API" in e and str(port) in e for e in texts(at.error)), texts(at.error)


@pytest.mark.parametrize("page", ["overview", "functions", "new"])
def test_wrong_key_is_a_message_and_another_key_can_be_entered(
    page: str, open_page: Any, dashboard_env: HearthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEARTH_API_KEY", "hk_wrong_key")
    at = open_page(page)
    assert not at.exception
    assert any("refused the API key" in e for e in texts(at.error)), texts(at.error)
    # the sidebar's key field fixes it for this session
    at.sidebar.text_input(key="hearth_api_key_input").input(dashboard_env.api_key).run()
    assert not at.error, texts(at.error)


def test_language_templates_retries_and_schedule(open_page: Any, dashboard_env: HearthServer, fname: str) -> None:
    at = open_page("new")
    at.selectbox(key="form_language").set_value("javascript").run()
    assert at.session_state["form_code"].startswith("exports.handler")  # the JavaScript starter replaced Python's
    assert at.selectbox(key="form_template").options[0] == "Hello (JSON in, JSON out)"
    at.selectbox(key="form_template").set_value("HTTP endpoint (statusCode / body)").run()
    assert "statusCode: 200" in at.session_state["form_code"]

    at.text_input(key="form_name").input(fname)
    at.number_input(key="form_retries").set_value(4)
    at.text_area(key="form_schedule").input("not a cron line")
    at.button(key="form_submit").click().run()
    schedule_errors = [e for e in texts(at.error) if e.startswith("schedule:")]
    assert schedule_errors and "cron" in schedule_errors[0], texts(at.error)
    assert dashboard_env.client.get(f"/api/functions/{fname}").status_code == 404

    at.text_area(key="form_schedule").input("0 3 * * *\n*/30 * * * *")
    at.button(key="form_submit").click().run()
    assert not at.error, texts(at.error)
    function = dashboard_env.client.get(f"/api/functions/{fname}").json()
    assert function["language"] == "javascript" and "statusCode: 200" in function["code"]
    assert function["retries"] == 4
    assert function["schedule"] == ["0 3 * * *", "*/30 * * * *"]
    response = dashboard_env.client.get(f"/fn/{fname}", params={"name": "form"})
    assert response.json()["message"] == "hello form"
    dashboard_env.client.delete(f"/api/functions/{fname}")  # its schedule would keep firing in the shared server


def test_http_event_format_is_a_field_of_the_form(open_page: Any, dashboard_env: HearthServer, fname: str) -> None:
    code = "import json\n\ndef handler(event, context):\n    return {'statusCode': 200, 'body': json.dumps(event)}\n"
    at = fill_new_function(open_page("new"), fname, code)
    assert at.selectbox(key="form_payload_format").value == "2.0"
    at.selectbox(key="form_payload_format").set_value("1.0")
    at.button(key="form_submit").click().run()
    assert not at.error, texts(at.error)
    assert dashboard_env.client.get(f"/api/functions/{fname}").json()["http_payload_format"] == "1.0"
    event = dashboard_env.client.get(f"/fn/{fname}/x").json()  # API Gateway's proxy event
    assert (event["httpMethod"], event["path"], event["resource"]) == ("GET", "/x", "/{proxy+}")
    dashboard_env.client.delete(f"/api/functions/{fname}")


def test_with_its_own_key_the_form_refuses_network_and_names_the_capability(
    open_page: Any, dashboard_env: HearthServer, fname: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As `hearth serve --dashboard` runs it: the key file, not the admin key."""
    monkeypatch.delenv("HEARTH_API_KEY")
    monkeypatch.setenv("HEARTH_DASHBOARD_KEY_FILE", str(dashboard_env.data_dir / "dashboard_key"))
    at = open_page("new")
    fill_new_function(at, fname)
    at.checkbox(key="form_network").check().run()
    at.button(key="form_submit").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("allow_network" in e for e in texts(at.error)), texts(at.error)
    assert dashboard_env.client.get(f"/api/functions/{fname}").status_code == 404
    # without network, the same form creates the function (in the admin's namespace)
    at.checkbox(key="form_network").uncheck().run()
    at.button(key="form_submit").click().run()
    assert not at.error, texts(at.error)
    assert dashboard_env.client.get(f"/api/functions/{fname}").json()["owner"] == "admin"
    dashboard_env.client.delete(f"/api/functions/{fname}")
