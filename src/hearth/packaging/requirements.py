"""requirements.txt, read the way pip reads it, narrowed to registry packages.

pip (`pip/_internal/req/req_file.py`) first joins lines that end in a backslash (`join_lines`), then
drops comments (`ignore_comments`: `#` at the start or after whitespace) and expands `${VAR}`; a
line is then split at its first space-separated token that starts with `-`: what comes before is the
requirement, the rest are options, parsed with shlex. We do the same, so that what we check is what
pip would act on, and accept only requirement specifiers (PEP 508 without a URL, parsed by
`packaging`) with `--hash` as their only option. Everything else (option lines such as `-r`, `-c`,
`-e`, `-i`, `-f`; direct references `name @ url`; paths; archives; environment variables) is refused
with its line number. The build is then given the list rendered from what was checked, not the
uploaded text.
"""

from __future__ import annotations

import codecs
import re
import shlex
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement

COMMENT_RE = re.compile(r"(^|\s+)#.*$")  # pip's
CODING_RE = re.compile(r"^#.*coding[:=]\s*([-\w.]+)")  # pip's auto_decode honours a PEP 263 declaration
HASH_RE = re.compile(r"^(sha256|sha384|sha512):[0-9a-fA-F]+$")
# pip installs a "name" ending like this as a file in the current directory (is_archive_file).
ARCHIVE_SUFFIXES = (
    ".zip",
    ".whl",
    ".tar",
    ".tar.gz",
    ".tgz",
    ".tar.bz2",
    ".tbz",
    ".tar.xz",
    ".txz",
    ".tlz",
    ".tar.lz",
    ".tar.lzma",
)


class RequirementsError(ValueError):
    def __init__(self, line: int | None, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class CheckedRequirement:
    requirement: Requirement
    hashes: tuple[str, ...]

    def render(self) -> str:
        return " ".join([str(self.requirement), *(f"--hash={value}" for value in self.hashes)])


def decode(content: bytes) -> str:
    if content.startswith(codecs.BOM_UTF8):
        content = content[len(codecs.BOM_UTF8) :]
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise RequirementsError(None, "is not UTF-8 text") from None
    for number, line in enumerate(text.splitlines()[:2], 1):
        match = CODING_RE.match(line)
        if match and _codec(match.group(1)) != "utf-8":  # pip would decode it otherwise
            raise RequirementsError(number, f"declares the encoding {match.group(1)!r}; only UTF-8 is accepted")
    return text


def _codec(name: str) -> str | None:
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def join_lines(lines: list[str]) -> list[tuple[int, str]]:
    """pip's join_lines: a line ending in `\\` continues on the next; the joined line keeps the first number."""
    joined: list[tuple[int, str]] = []
    primary: int | None = None
    parts: list[str] = []
    for number, line in enumerate(lines, 1):
        if not line.endswith("\\") or COMMENT_RE.match(line):
            if COMMENT_RE.match(line):
                line = " " + line  # as pip does: a comment after a continuation stays a comment
            if parts:
                parts.append(line)
                assert primary is not None
                joined.append((primary, "".join(parts)))
                parts = []
            else:
                joined.append((number, line))
        else:
            if not parts:
                primary = number
            parts.append(line.strip("\\"))
    if parts:
        assert primary is not None
        joined.append((primary, "".join(parts)))
    return joined


def logical_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) as pip sees them: continuations joined, comments and blank lines gone."""
    result = []
    for number, line in join_lines(text.splitlines()):
        stripped = COMMENT_RE.sub("", line).strip()
        if stripped:
            result.append((number, stripped))
    return result


def break_args_options(line: str) -> tuple[str, str]:
    """pip's split of a line into the requirement and its options (at the first token starting with `-`)."""
    tokens = line.split(" ")
    args: list[str] = []
    for index, token in enumerate(tokens):
        if token.startswith("-"):
            return " ".join(args), " ".join(tokens[index:])
        args.append(token)
    return " ".join(args), ""


def parse_hashes(options: str, number: int) -> tuple[str, ...]:
    try:
        tokens = shlex.split(options, comments=False)
    except ValueError as exc:
        raise RequirementsError(number, f"cannot read its options: {exc}") from None
    hashes: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token.startswith("--hash="):
            value = token.removeprefix("--hash=")
        elif token == "--hash" and index + 1 < len(tokens):
            index += 1
            value = tokens[index]
        else:
            raise RequirementsError(number, f"the option {token.split('=', 1)[0]!r} is not allowed; only --hash is")
        if not HASH_RE.match(value):
            raise RequirementsError(number, f"{value!r} is not a hash (sha256:<hex>, sha384 or sha512)")
        hashes.append(value)
        index += 1
    return tuple(hashes)


def check_requirement(number: int, line: str) -> CheckedRequirement:
    if "${" in line:
        raise RequirementsError(number, "environment variables (${...}) are not allowed")
    spec, options = break_args_options(line)
    if not spec:
        option = options.split("=", 1)[0].split(" ", 1)[0]
        raise RequirementsError(
            number, f"the option line {option!r} is not allowed: only package requirements (and --hash) are"
        )
    try:
        requirement = Requirement(spec)
    except InvalidRequirement as exc:
        raise RequirementsError(
            number, f"is not a package requirement (name[extras] version ; marker): {str(exc).splitlines()[0]}"
        ) from None
    if requirement.url is not None:
        raise RequirementsError(number, "direct references (name @ URL) are not allowed, only packages from the index")
    if requirement.name.lower().endswith(ARCHIVE_SUFFIXES):
        raise RequirementsError(number, f"{requirement.name!r} names an archive file, not a package")
    return CheckedRequirement(requirement, parse_hashes(options, number))


def check_requirements(content: bytes) -> list[CheckedRequirement]:
    """Every requirement of the file, or RequirementsError for the first line pip would read otherwise."""
    return [check_requirement(number, line) for number, line in logical_lines(decode(content))]


def render(requirements: list[CheckedRequirement]) -> bytes:
    return "".join(item.render() + "\n" for item in requirements).encode()
