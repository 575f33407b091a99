"""Builds take their index settings from the host's own pip and npm (real `pip config` / `npm config` runs)."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import pytest

from hearth.packaging.builder import BuildFailed, LayerBuilder
from hearth.packaging.deps import find_dependencies
from hearth.packaging.index_config import IndexConfig, read_host_config
from hearth.packaging.sandbox import BuildLimits, BuildSandbox


def test_https_indexes_are_kept_local_ones_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "https://pypi.internal.example/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "file:///opt/pypi/simple https://extra.example:8443/simple")
    monkeypatch.setenv("PIP_FIND_LINKS", "/opt/wheels")
    monkeypatch.setenv("PIP_CONSTRAINT", "/etc/constraints.txt")
    monkeypatch.setenv("npm_config_registry", "https://npm.internal.example/")
    config = read_host_config()
    assert config.pip_index_url == "https://pypi.internal.example/simple"
    assert config.pip_extra_index_urls == ("https://extra.example:8443/simple",)
    assert config.pip_find_links == ()
    assert {"file:///opt/pypi/simple", "/opt/wheels", "constraint=/etc/constraints.txt"} <= set(config.dropped)
    assert config.hosts("python") == {("pypi.internal.example", 443), ("extra.example", 8443)}
    assert config.problems == {}
    if shutil.which("npm"):
        assert config.hosts("javascript") == {("npm.internal.example", 443)}


def test_pypi_brings_its_file_host() -> None:
    assert IndexConfig().hosts("python") == {("pypi.org", 443), ("files.pythonhosted.org", 443)}
    assert IndexConfig().hosts("javascript") == {("registry.npmjs.org", 443)}


def test_a_plain_http_index_fails_builds_instead_of_falling_back_to_the_public_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "http://10.0.0.1:3141/simple")
    config = read_host_config()
    assert "not https" in config.problems["python"]

    async def version(_language: str) -> str:
        return "3.11"

    builder = LayerBuilder(
        tmp_path,
        version,
        BuildSandbox(lambda: None, BuildLimits(), "test"),  # type: ignore[arg-type, return-value]
        lambda _language: "unused",
        lambda: config,
    )
    deps = find_dependencies("python", {"requirements.txt": b"six\n"})
    assert deps is not None
    with pytest.raises(BuildFailed, match=re.escape("index-url http://10.0.0.1:3141/simple is not https")):
        asyncio.run(builder.ensure(deps, "key", "3.11", lambda _line: None))
    assert list(tmp_path.iterdir()) == []  # no staging directory left
