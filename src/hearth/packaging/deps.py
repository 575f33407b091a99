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

LAYER_FORMAT = 1
PYTHON_MANIFEST = "requirements.txt"
NODE_MANIFEST = "package.json"
NODE_LOCKFILES = ("package-lock.json", "npm-shrinkwrap.json")
LAYERS_DIR = "layers"  # under the code store's root
# Where a layer's packages live inside the layer directory, per language.
LAYER_SUBDIR = {"python": "python", "javascript": "node_modules"}


class ManifestError(ValueError):
    """The dependency list cannot be read; the message names the file and the problem."""


@dataclass(frozen=True)
class Dependencies:
    language: str
    manifest: str  # the file that declared them
    files: dict[str, bytes]  # the manifest and lockfile contents, as uploaded

    def layer_key(self, runtime_version: str, policy: str) -> str:
        h = hashlib.sha256()
        header = {"format": LAYER_FORMAT, "language": self.language, "runtime": runtime_version, "policy": policy}
        h.update(json.dumps(header, sort_keys=True).encode())
        for name in sorted(self.files):
            content = normalized(name, self.files[name])
            h.update(b"\0" + name.encode() + b"\0" + len(content).to_bytes(8, "big") + content)
        return h.hexdigest()


def normalized(name: str, content: bytes) -> bytes:
    """requirements.txt without comments, blank lines and trailing spaces: the same list, the same key."""
    if name != PYTHON_MANIFEST:
        return content
    lines = []
    for raw in content.decode("utf-8", errors="replace").splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if line:
            lines.append(line)
    return "\n".join(lines).encode()


def find_dependencies(language: str, files: dict[str, bytes]) -> Dependencies | None:
    """The bundle's dependency list, or None when it declares nothing to install."""
    if language == "python":
        content = files.get(PYTHON_MANIFEST)
        if content is None or not normalized(PYTHON_MANIFEST, content):
            return None
        _check_text(PYTHON_MANIFEST, content)
        return Dependencies(language, PYTHON_MANIFEST, {PYTHON_MANIFEST: content})
    if language == "javascript":
        content = files.get(NODE_MANIFEST)
        if content is None:
            return None
        try:
            manifest = json.loads(content)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{NODE_MANIFEST} is not valid JSON: {exc}") from None
        if not isinstance(manifest, dict):
            raise ManifestError(f"{NODE_MANIFEST} must be a JSON object")
        deps = manifest.get("dependencies")
        if deps is not None and not isinstance(deps, dict):
            raise ManifestError(f"{NODE_MANIFEST}: 'dependencies' must be an object")
        if not deps:
            return None
        _check_node_specs(deps)
        chosen = {NODE_MANIFEST: content}
        for lockfile in NODE_LOCKFILES:
            if lockfile in files:
                chosen[lockfile] = files[lockfile]
        return Dependencies(language, NODE_MANIFEST, chosen)
    return None


def _check_text(name: str, content: bytes) -> None:
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError(f"{name} is not UTF-8 text") from None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        # Options that would point pip elsewhere than the host's configured registries, or at local files.
        if stripped.startswith(("-e", "--editable", "-r", "--requirement", "-c", "--constraint")):
            raise ManifestError(f"{name} line {number}: {stripped.split()[0]} is not supported in a bundle")
        if stripped.startswith(("-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--trusted-host")):
            raise ManifestError(f"{name} line {number}: index options are not supported; the host's pip config is used")
        if stripped.startswith(("/", ".", "~")) or "file:" in stripped:
            raise ManifestError(f"{name} line {number}: local paths are not supported, only packages from a registry")


def _check_node_specs(deps: dict[str, object]) -> None:
    for package, spec in deps.items():
        if not isinstance(spec, str):
            raise ManifestError(f"{NODE_MANIFEST}: the version of {package!r} must be a string")
        if spec.startswith(("file:", "link:", "/", ".", "~")):
            raise ManifestError(f"{NODE_MANIFEST}: {package!r} points at a local path; only registry packages work")
