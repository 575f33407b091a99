"""What every user command shares: consoles, the API client, and turning failures into exit codes.

Exit codes: 0 success, 1 an API or function error (or Hearth unreachable), 2 a usage error.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from hearth.client import HearthClient, HearthError

EXIT_ERROR = 1
EXIT_USAGE = 2

# Results go to stdout, progress, notes and errors to stderr; piped output is not cut at 80 columns.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 200)

F = TypeVar("F", bound=Callable[..., Any])


class UsageError(Exception):
    """Wrong arguments or input files: exit code 2."""


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code)


def client() -> HearthClient:
    return HearthClient()


def handle_errors(command: F) -> F:
    """Run `command`, turning Hearth's errors into a one-line message and an exit code (no traceback)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except UsageError as exc:
            fail(str(exc), EXIT_USAGE)
        except HearthError as exc:
            prefix = f"{exc.error_type}: " if exc.error_type else ""
            fail(prefix + exc.message)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except Exception as exc:
            if os.environ.get("HEARTH_DEBUG"):
                traceback.print_exc()
            fail(f"unexpected {type(exc).__name__}: {exc} (HEARTH_DEBUG=1 shows the traceback)")

    return wrapper  # type: ignore[return-value]


def human_bytes(size: float | None) -> str:
    if size is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"
