"""Where builds may fetch packages from: the host's pip and npm index settings, and nothing else.

Read once from the host's own tools (`pip config list`, `npm config get`), so an operator points
builds at a private index or proxy the way they point their own pip and npm at it. Only what says
where the index is (and its CA bundle, timeouts) goes into a build; `http(s)` indexes only: `file://`
indexes, local find-links directories and constraint files of the host are dropped (a build cannot
see the host's disk), and so are credentials files and any other setting.
"""

from __future__ import annotations

import ast
import logging
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

PYPI_INDEX = "https://pypi.org/simple"
PYPI_FILES_HOST = "files.pythonhosted.org"  # where pypi.org's index links point
NPM_REGISTRY = "https://registry.npmjs.org/"
# npm settings passed through when the host sets them (they change what npm writes, not where it goes).
NPM_PASSED = ("omit-lockfile-registry-resolved", "strict-ssl", "fetch-retries", "fetch-timeout")
PIP_PASSED = ("default-timeout", "timeout", "retries")
CONFIG_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class IndexConfig:
    pip_index_url: str = PYPI_INDEX
    pip_extra_index_urls: tuple[str, ...] = ()
    pip_find_links: tuple[str, ...] = ()
    pip_cert: Path | None = None  # a CA bundle on the host, copied into each build
    pip_settings: dict[str, str] = field(default_factory=dict)
    npm_registry: str = NPM_REGISTRY
    npm_cafile: Path | None = None
    npm_settings: dict[str, str] = field(default_factory=dict)
    dropped: tuple[str, ...] = ()  # what the host's config said that builds do not get, for the log
    # Why builds of a language cannot run: its main index is not https. Falling back to the public
    # index instead would resolve private package names there (dependency confusion).
    problems: dict[str, str] = field(default_factory=dict)

    def pip_hosts(self) -> set[tuple[str, int]]:
        urls = [self.pip_index_url, *self.pip_extra_index_urls, *self.pip_find_links]
        hosts = {endpoint(url) for url in urls}
        if any(host == "pypi.org" for host, _ in hosts):
            hosts.add((PYPI_FILES_HOST, 443))
        return hosts

    def npm_hosts(self) -> set[tuple[str, int]]:
        return {endpoint(self.npm_registry)}

    def hosts(self, language: str) -> set[tuple[str, int]]:
        return self.pip_hosts() if language == "python" else self.npm_hosts()


def endpoint(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return (parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))


def is_https(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "https" and bool(parts.hostname)


def _config_output(command: list[str], what: str, fallback: str) -> str | None:
    """What a host tool prints about its configuration; None (logged) when it cannot be asked."""
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=CONFIG_TIMEOUT_S, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("cannot read the host's %s (%s): %s", what, exc, fallback)
        return None
    return done.stdout


def pip_config() -> dict[str, str]:
    """The host pip's merged settings (files, then `install.` sections, then PIP_* variables win)."""
    stdout = _config_output([sys.executable, "-m", "pip", "config", "list"], "pip config", "builds use PyPI")
    if stdout is None:
        return {}
    ranked: dict[str, tuple[int, str]] = {}
    rank = {"global": 0, "install": 1, ":env:": 2}
    for line in stdout.splitlines():
        name, _, raw = line.partition("=")
        section, _, key = name.rpartition(".")
        if section not in rank or not raw:
            continue
        try:
            value = str(ast.literal_eval(raw))  # pip prints repr()s
        except (ValueError, SyntaxError):
            continue
        if key not in ranked or ranked[key][0] <= rank[section]:
            ranked[key] = (rank[section], value)
    return {key: value for key, (_, value) in ranked.items()}


def npm_config(keys: tuple[str, ...]) -> dict[str, str]:
    npm = shutil.which("npm")
    if npm is None:
        return {}
    stdout = _config_output([npm, "config", "get", *keys], "npm config", "builds use the public registry")
    if stdout is None:
        return {}
    values = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and value not in ("", "null", "undefined"):
            values[key.strip()] = value.strip()
    if len(keys) == 1 and stdout.strip() and "=" not in stdout:  # one key: npm prints the bare value
        values = {keys[0]: stdout.strip()}
    return values


def _existing(path: str | None) -> Path | None:
    return Path(path) if path and Path(path).is_file() else None


def read_host_config() -> IndexConfig:
    pip = pip_config()
    dropped: list[str] = []

    def urls(key: str) -> tuple[str, ...]:
        kept = []
        for url in pip.get(key, "").split():
            (kept if is_https(url) else dropped).append(url)
        return tuple(kept)

    problems = {}
    index = pip.get("index-url", PYPI_INDEX)
    if not is_https(index):
        problems["python"] = f"the host's pip index-url {index} is not https: builds reach indexes over https only"
    npm = npm_config(("registry", "cafile", *NPM_PASSED))
    registry = npm.get("registry", NPM_REGISTRY)
    if not is_https(registry):
        problems["javascript"] = (
            f"the host's npm registry {registry} is not https: builds reach registries over https only"
        )
    dropped += [f"{key}={pip[key]}" for key in ("constraint", "requirement") if key in pip]
    return IndexConfig(
        pip_index_url=index,
        pip_extra_index_urls=urls("extra-index-url"),
        pip_find_links=urls("find-links"),
        pip_cert=_existing(pip.get("cert")),
        pip_settings={key: pip[key] for key in PIP_PASSED if key in pip},
        npm_registry=registry if registry.endswith("/") else registry + "/",
        npm_cafile=_existing(npm.get("cafile")),
        npm_settings={key: npm[key] for key in NPM_PASSED if key in npm},
        dropped=tuple(dropped),
        problems=problems,
    )
