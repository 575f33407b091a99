"""The version of a runtime image's interpreter (Python `3.11`, Node `18`), asked of the image once."""

from __future__ import annotations

import asyncio
from typing import Any

from hearth.images.catalog import language_of

PROBES: dict[str, list[str]] = {
    "python": ["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
    "javascript": ["node", "-p", "process.versions.node.split('.')[0]"],
}


class RuntimeVersions:
    """Callable `runtime -> version` (`python3.13`, or a language for its default runtime), cached per image.

    The image tag changes with its recipe. Which image a runtime has: hearth.images.catalog.CATALOG.
    """

    def __init__(self, docker_backend: Any | None) -> None:
        self._backend = docker_backend
        self._cache: dict[str, str] = {}
        self._lock = asyncio.Lock()

    async def __call__(self, language: str) -> str:
        if self._backend is None:
            raise RuntimeError("the Docker backend (which holds the runtime images) is not configured")
        image = self._backend.image_for(language)
        async with self._lock:
            if image not in self._cache:
                self._cache[image] = await asyncio.to_thread(self._probe, image, language)
            return self._cache[image]

    def _probe(self, image: str, language: str) -> str:
        output = self._backend.client.containers.run(
            image,
            PROBES[language_of(language)],
            remove=True,
            network_mode="none",
            user="65534:65534",
            labels={"hearth.owner": self._backend.owner, "hearth.probe": "runtime-version"},
        )
        version = output.decode().strip()
        if not version or not version.replace(".", "").isdigit():
            raise RuntimeError(f"unexpected answer from {image}: {version[:80]!r}")
        return version
