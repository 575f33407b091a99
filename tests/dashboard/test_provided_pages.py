"""The dashboard with custom runtimes: the New form's `provided` language and its shell bootstrap template."""

from __future__ import annotations

from typing import Any

from hearth.engine import provided
from hearth.images import provided as provided_images
from hearth.testing import HearthServer


def test_new_provided_function_from_the_bootstrap_template(
    open_page: Any, dashboard_env: HearthServer, fname: str, docker_client: Any
) -> None:
    provided.ensure_relay()
    provided_images.ensure_base_image(docker_client)
    at = open_page("new")
    at.selectbox(key="form_language").set_value("provided").run()
    assert at.session_state["form_code"].startswith("#!/bin/sh")  # the bootstrap template
    assert "invocation/next" in at.session_state["form_code"]
    at.text_input(key="form_name").input(fname)
    at.button(key="form_submit").click().run(timeout=60)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    function = dashboard_env.client.get(f"/api/functions/{fname}").json()
    assert function["language"] == "provided" and function["code"].startswith("#!/bin/sh")
    assert function["files"] == ["bootstrap"]
    reply = dashboard_env.invoke(fname, {"who": "dashboard"})
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"hello": "world", "event": {"who": "dashboard"}}
