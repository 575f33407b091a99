"""A stored version as the engine sees it: the row's `extra` settings become typed FunctionSpec fields
(hearth.api.functions.specs), so nothing below the API reads `extra`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hearth.api.functions.specs import spec_from_version
from hearth.engine.sandbox import BatchSettings
from hearth.store.models import FunctionVersion


def version_row(extra: dict[str, Any] | None, language: str = "python") -> FunctionVersion:
    return FunctionVersion(
        version=3,
        language=language,
        handler="main.handler",
        code_path="ab/abcdef",
        timeout_s=5.0,
        memory_mb=256,
        cpus=1.0,
        env={"A": "1"},
        backend="docker",
        min_warm=1,
        max_instances=4,
        concurrency=2,
        network=False,
        route="/x",
        auth="key",
        extra=extra,
    )


def test_extra_settings_become_typed_fields() -> None:
    extra = {
        "batch": {"max_size": 8, "max_wait_ms": 5.0, "batch_handler": True},
        "retries": 0,
        "schedule": ["*/5 * * * *", "0 0 * * *"],
        "http_payload_format": "1.0",
        "runtime": "python3.12",
        "layer": "k1",
        "image": "example/app:1",
        "image_id": "sha256:beef",
    }
    spec = spec_from_version(version_row(extra), "team.fn", Path("/code"))
    assert (spec.name, spec.version, spec.code_dir) == ("team.fn", 3, Path("/code/ab/abcdef"))
    assert spec.batch == BatchSettings(max_size=8, max_wait_ms=5.0, batch_handler=True)
    assert spec.retries == 0  # not the default: no retries
    assert spec.schedule == ("*/5 * * * *", "0 0 * * *")
    assert spec.http_payload_format == "1.0"
    assert spec.runtime == "python3.12"
    assert spec.layer_dir == Path("/code/layers/k1/python")
    assert spec.image == "sha256:beef"  # the deployed image's id before its reference


def test_absent_settings_take_their_defaults() -> None:
    spec = spec_from_version(version_row(None), "fn", Path("/code"))
    assert spec.batch is None and spec.retries is None and spec.schedule == ()
    assert spec.http_payload_format == "2.0" and spec.runtime == "" and spec.layer_dir is None
    assert spec.image is None
    assert spec_from_version(version_row({"image": "example/app:1"}), "fn", Path("/c")).image == "example/app:1"
