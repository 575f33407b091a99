"""The runtimes Hearth offers, and what each is built from: the one place that maps a runtime to its image recipe.

Lambda's identifiers (python3.13, nodejs20.x, provided) name them; a language (python, javascript)
names its default runtime, and Lambda's aliases (provided.al2023) name a catalog runtime.
"""

from __future__ import annotations

from dataclasses import dataclass

from hearth.images.debian import host_suite

# The languages of Hearth's agents (hearth/runtimes/<language>), whose default runtimes keep stem cells
# from the start. `provided` (custom runtimes over the Lambda Runtime API, hearth.engine.provided) is a
# language of its own in the catalog too: its sandboxes run Hearth's relay instead of an agent.
LANGUAGES: tuple[str, ...] = ("python", "javascript")
PROVIDED = "provided"


@dataclass(frozen=True)
class RuntimeImage:
    """One runtime Hearth offers: Lambda's identifier, its language and the Debian suite it is built from.

    This is the one place that maps a runtime to what it is built from (image recipe, and the
    version a dependency layer is built for); `default_runtime` picks each language's default.
    """

    name: str  # Lambda's identifier: python3.11, nodejs20.x
    language: str  # python | javascript (the agent that runs it) | provided (the relay, hearth.engine.provided)
    suite: str  # the Debian release whose packages make the image
    packages: tuple[str, ...]
    aws_sdk: bool = False  # Node: the AWS SDK for JavaScript v3 layer is mounted (hearth.images.aws_sdk)
    customize: tuple[str, ...] = ()  # mmdebstrap customize hooks beyond the common ones (debian.CLEAN)

    @property
    def builds(self) -> bool:
        """Whether dependencies are installed for this runtime (requirements.txt / package.json): not for provided."""
        return self.language in INSTALLERS

    @property
    def builder_packages(self) -> tuple[str, ...]:
        """The builder image's packages: the runtime's plus its installer (and python3 for the build's entry script)."""
        return (*self.packages, *INSTALLERS[self.language])


# Lambda's Python runtimes ship boto3; its Node runtimes from 18 ship the AWS SDK for JavaScript v3
# (not in Debian: a separate recipe-hashed layer, hearth.images.aws_sdk).
CATALOG: dict[str, RuntimeImage] = {
    image.name: image
    for image in (
        RuntimeImage("python3.11", "python", "bookworm", ("python3", "python3-boto3")),
        RuntimeImage("python3.13", "python", "trixie", ("python3", "python3-boto3")),
        RuntimeImage("nodejs18.x", "javascript", "bookworm", ("nodejs",), aws_sdk=True),
        RuntimeImage("nodejs20.x", "javascript", "trixie", ("nodejs",), aws_sdk=True),
        # Lambda's OS-only runtime: a `bootstrap` (or an image's entrypoint) serving the Runtime API.
        # curl for shell bootstraps such as AWS's tutorial; /bin/sh is bash as on Amazon Linux, whose
        # bootstraps use `source` and `set -o pipefail`.
        RuntimeImage(PROVIDED, PROVIDED, "bookworm", ("curl",), customize=('ln -sf bash "$1"/usr/bin/sh',)),
    )
}
RUNTIMES: tuple[str, ...] = tuple(CATALOG)
# Lambda's other names for a catalog runtime: accepted wherever a runtime is named, reported as what runs.
ALIASES: dict[str, str] = {"provided.al2023": PROVIDED, "provided.al2": PROVIDED}
# Dependency builds run in a builder image: the runtime's packages plus its installer, from the same
# suite, so wheels and native modules match the runtime. The node builder's python3 runs the build's
# entry script (hearth/packaging/build_entry.py).
INSTALLERS: dict[str, tuple[str, ...]] = {"python": ("python3-pip",), "javascript": ("npm", "python3")}
# The runtimes with a builder image (provided functions bring what they run: no dependency build).
BUILDER_RUNTIMES: tuple[str, ...] = tuple(name for name, image in CATALOG.items() if image.builds)


def default_runtime(language: str) -> str:
    """The runtime `language` means when no version is named: the one built from the host's suite, else the oldest."""
    if language in CATALOG or language in ALIASES:
        return ALIASES.get(language, language)
    offered = [image for image in CATALOG.values() if image.language == language]
    if not offered:
        raise ValueError(f"unknown language {language!r} (known: {', '.join((*LANGUAGES, PROVIDED))})")
    suite = host_suite()
    return next((image.name for image in offered if image.suite == suite), offered[0].name)


def runtime_image(runtime: str) -> RuntimeImage:
    """The catalog entry of a runtime identifier (`python3.13`) or of a language's default (`python`)."""
    try:
        return CATALOG[default_runtime(runtime) if runtime in LANGUAGES else ALIASES.get(runtime, runtime)]
    except KeyError:
        raise ValueError(f"unknown runtime {runtime!r} (known: {', '.join(RUNTIMES)})") from None


def language_of(runtime: str) -> str:
    return runtime_image(runtime).language
