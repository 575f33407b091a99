"""package.json and its lockfile, narrowed to packages from the configured npm registry.

npm (npm-package-arg) reads a dependency's spec as, in order: a local path or `file:`, an `npm:`
alias, a hosted git shorthand (`user/repo`, `github:...`), a URL (`git+...`, `http(s):`), a tarball
file name, and only then a registry version, range or tag. We accept only the last kind (a range per
node-semver, or a tag made of URL-safe characters) and `npm:` aliases to one, in every map npm
resolves at install time (it resolves devDependencies too, even when it does not install them),
and in `overrides`. A lockfile may only point (`resolved`) at the registry, and holds no links and
no packages outside node_modules.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

import nodesemver

SPEC_MAPS = ("dependencies", "optionalDependencies", "peerDependencies", "devDependencies")
# npm's name rules (validate-npm-package-name), old names' capitals included.
NAME_RE = re.compile(r"^(@[A-Za-z0-9~-][A-Za-z0-9._~-]*/)?[A-Za-z0-9~-][A-Za-z0-9._~-]*$")
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
TARBALL_SUFFIXES = (".tgz", ".tar.gz", ".tar")
MAX_SPEC = 256  # node-semver is slow on very long ranges; real ones are short


class NpmManifestError(ValueError):
    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")


def check_spec(where: str, spec: object) -> None:
    if not isinstance(spec, str):
        raise NpmManifestError(where, "the version must be a string")
    target = spec
    if spec.startswith("npm:"):
        aliased = spec.removeprefix("npm:")
        at = aliased.find("@", 1)  # past a scope's leading @; `npm:name` alone means the latest version
        name, target = (aliased[:at], aliased[at + 1 :]) if at > 0 else (aliased, "")
        if not NAME_RE.match(name):
            raise NpmManifestError(where, f"{spec!r} aliases {name!r}, which is not a package name")
    if is_registry_version(target):
        return
    raise NpmManifestError(
        where,
        f"{spec[:100]!r} is not a version, range or tag of a registry package (paths, file:, link:, git, "
        "user/repo and URLs are not allowed)",
    )


def is_registry_version(spec: str) -> bool:
    if len(spec) > MAX_SPEC or any(char in spec for char in ":/\\@") or spec.lower().endswith(TARBALL_SUFFIXES):
        return False
    if nodesemver.valid_range(spec, loose=True) is not None:
        return True
    return bool(TAG_RE.match(spec))


def check_name(where: str, name: str) -> None:
    if not NAME_RE.match(name) or name.split("/")[-1] in (".", ".."):
        raise NpmManifestError(where, f"{name!r} is not a package name")


def check_spec_map(where: str, specs: object) -> None:
    if specs is None:
        return
    if not isinstance(specs, dict):
        raise NpmManifestError(where, "must be an object of package names to versions")
    for name, spec in specs.items():
        check_name(f"{where}.{name}", name)
        check_spec(f"{where}.{name}", spec)


def check_overrides(where: str, overrides: object, root_deps: dict[str, Any]) -> None:
    if isinstance(overrides, str):
        if overrides.startswith("$") and overrides[1:] in root_deps:  # a reference to a root dependency
            return
        check_spec(where, overrides)
        return
    if not isinstance(overrides, dict):
        raise NpmManifestError(where, "must be a version or an object")
    for key, value in overrides.items():
        if key != ".":
            name, _, _range = key.rpartition("@") if key.rfind("@") > 0 else (key, "", "")
            check_name(f"{where}.{key}", name)
        check_overrides(f"{where}.{key}", value, root_deps)


def check_package_json(manifest: dict[str, Any], file: str = "package.json") -> None:
    for field in SPEC_MAPS:
        check_spec_map(f"{file} {field}", manifest.get(field))
    if "workspaces" in manifest:
        raise NpmManifestError(f"{file} workspaces", "workspaces are not supported in a function bundle")
    for field in ("bundleDependencies", "bundledDependencies"):
        bundled = manifest.get(field)
        if bundled is not None and not isinstance(bundled, bool | list):
            raise NpmManifestError(f"{file} {field}", "must be a list of names or a boolean")
    if "overrides" in manifest:
        check_overrides(f"{file} overrides", manifest["overrides"], manifest.get("dependencies") or {})


def registry_prefix(registry: str) -> str:
    parts = urlsplit(registry)
    return f"{parts.scheme}://{parts.netloc}/"


def check_resolved(where: str, resolved: object, registry: str) -> None:
    if resolved is None:
        return
    if not isinstance(resolved, str) or not resolved.startswith(registry_prefix(registry)):
        raise NpmManifestError(where, f"resolved {str(resolved)[:100]!r} is not on the registry {registry}")


def check_lockfile(file: str, content: bytes, registry: str) -> None:
    try:
        lock = json.loads(content)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise NpmManifestError(file, f"is not valid JSON: {exc}") from None
    if not isinstance(lock, dict):
        raise NpmManifestError(file, "must be a JSON object")
    packages = lock.get("packages") or {}
    if not isinstance(packages, dict):
        raise NpmManifestError(f"{file} packages", "must be an object")
    for path, entry in packages.items():
        where = f"{file} packages[{path!r}]"
        if not isinstance(entry, dict):
            raise NpmManifestError(where, "must be an object")
        if path == "":
            check_package_json(entry, file=f"{file} packages['']")
            continue
        segments = path.split("/")
        if segments[0] != "node_modules" or any(part in ("", ".", "..") for part in segments):
            raise NpmManifestError(where, "is not a package under node_modules")
        if entry.get("link"):
            raise NpmManifestError(where, "links to a local directory")
        check_resolved(where, entry.get("resolved"), registry)
        version = entry.get("version")
        if version is not None and (not isinstance(version, str) or nodesemver.valid(version, loose=True) is None):
            raise NpmManifestError(where, f"version {str(version)[:100]!r} is not a registry version")
    check_v1_dependencies(f"{file} dependencies", lock.get("dependencies"), registry)


def check_v1_dependencies(where: str, deps: object, registry: str) -> None:
    """lockfileVersion 1 (and the copy v2 keeps): nested `dependencies` with `version` and `resolved`."""
    if deps is None:
        return
    if not isinstance(deps, dict):
        raise NpmManifestError(where, "must be an object")
    for name, entry in deps.items():
        here = f"{where}.{name}"
        check_name(here, name)
        if not isinstance(entry, dict):
            raise NpmManifestError(here, "must be an object")
        version = entry.get("version")
        if version is not None:
            # v1 writes the alias as "npm:name@version"; anything else that is not a version is a path, URL or git
            plain = version.rpartition("@")[2] if isinstance(version, str) and version.startswith("npm:") else version
            if not isinstance(plain, str) or nodesemver.valid(plain, loose=True) is None:
                raise NpmManifestError(here, f"version {str(version)[:100]!r} is not a registry version")
        check_resolved(here, entry.get("resolved"), registry)
        check_v1_dependencies(f"{here}.dependencies", entry.get("dependencies"), registry)
