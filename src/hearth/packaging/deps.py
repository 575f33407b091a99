"""Which dependency list a bundle declares, and the key of the layer it builds to.

Python: `requirements.txt` at the bundle's root. JavaScript: `package.json` at the root with a
non-empty `dependencies` map (plus `package-lock.json` / `npm-shrinkwrap.json` when present, which
pins the tree and is installed with `npm ci`). The layer key hashes everything that decides what
gets installed: the language, the runtime's version, the install policy and the manifest files, so
identical lists build once and a changed runtime never reuses a stale layer.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from hearth.packaging.npm_manifest import NpmManifestError, check_lockfile, check_package_json
from hearth.packaging.requirements import RequirementsError, check_requirements, render

LAYER_FORMAT = 2  # 2: built in a sandbox of the runtime's own image
PYTHON_MANIFEST = "requirements.txt"
NODE_MANIFEST = "package.json"
NODE_LOCKFILES = ("package-lock.json", "npm-shrinkwrap.json")
DEFAULT_NPM_REGISTRY = "https://registry.npmjs.org/"
LAYERS_DIR = "layers"  # under the code store's root
# Where a layer's packages live inside the layer directory, per language.
LAYER_SUBDIR = {"python": "python", "javascript": "node_modules"}


class ManifestError(ValueError):
    """The dependency list cannot be read; the message names the file and the problem."""


@dataclass(frozen=True)
class Dependencies:
    language: str
    manifest: str  # the file that declared them
    files: dict[str, bytes]  # the files the build installs from (see find_dependencies)

    def layer_key(self, runtime_version: str, policy: str) -> str:
        h = hashlib.sha256()
        header = {"format": LAYER_FORMAT, "language": self.language, "runtime": runtime_version, "policy": policy}
        h.update(json.dumps(header, sort_keys=True).encode())
        for name in sorted(self.files):
            content = self.files[name]
            h.update(b"\0" + name.encode() + b"\0" + len(content).to_bytes(8, "big") + content)
        return h.hexdigest()


def find_dependencies(
    language: str, files: dict[str, bytes], npm_registry: str = DEFAULT_NPM_REGISTRY
) -> Dependencies | None:
    """The bundle's dependency list, checked (ManifestError), or None when it declares nothing to install.

    The files it holds are what the build installs: requirements.txt rendered from the checked
    requirements; package.json and its lockfile as uploaded, once every spec in them is checked.
    """
    if language == "python":
        content = files.get(PYTHON_MANIFEST)
        if content is None:
            return None
        try:
            rendered = render(check_requirements(content))
        except RequirementsError as exc:
            where = f" line {exc.line}" if exc.line is not None else ""
            raise ManifestError(f"{PYTHON_MANIFEST}{where}: {exc.reason}") from None
        if not rendered:
            return None
        return Dependencies(language, PYTHON_MANIFEST, {PYTHON_MANIFEST: rendered})
    if language == "javascript":
        content = files.get(NODE_MANIFEST)
        if content is None:
            return None
        try:
            manifest = json.loads(content)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ManifestError(f"{NODE_MANIFEST} is not valid JSON: {exc}") from None
        if not isinstance(manifest, dict):
            raise ManifestError(f"{NODE_MANIFEST} must be a JSON object")
        deps = manifest.get("dependencies")
        if deps is not None and not isinstance(deps, dict):
            raise ManifestError(f"{NODE_MANIFEST}: 'dependencies' must be an object")
        if not deps:
            return None
        chosen = {NODE_MANIFEST: content}
        try:
            check_package_json(manifest)
            for lockfile in NODE_LOCKFILES:
                if lockfile in files:
                    check_lockfile(lockfile, files[lockfile], npm_registry)
                    chosen[lockfile] = files[lockfile]
        except NpmManifestError as exc:
            raise ManifestError(str(exc)) from None
        except RecursionError:
            raise ManifestError(f"{NODE_MANIFEST} or its lockfile is nested too deeply") from None
        return Dependencies(language, NODE_MANIFEST, chosen)
    # `provided` (custom runtimes): nothing is installed; the bundle brings what its bootstrap runs,
    # and a requirements.txt or package.json in it is just a file.
    return None
