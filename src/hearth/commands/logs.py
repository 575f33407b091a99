"""`hearth logs NAME [--follow]`: what the function printed, per invocation (docs/api.md, "Metrics and logs")."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.markup import escape

from hearth.client import HearthError
from hearth.commands.common import client, fail, handle_errors, out


def stamp(ts: Any) -> str:
    if isinstance(ts, int | float):
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return str(ts or "")


def print_line(line: dict[str, Any]) -> None:
    color = "red" if line.get("stream") == "stderr" else "default"
    text = str(line.get("line", "")).rstrip("\n")
    invocation = str(line.get("invocation_id") or "")
    out.print(f"[dim]{escape(stamp(line.get('ts')))} {escape(invocation)}[/dim] [{color}]{escape(text)}[/{color}]")


def sort_key(line: dict[str, Any]) -> str:
    ts = line.get("ts")
    return f"{ts:020.6f}" if isinstance(ts, int | float) else str(ts or "")


@handle_errors
def logs(
    name: Annotated[str, typer.Argument(help="function name")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new lines as they come")] = False,
    since: Annotated[str | None, typer.Option(help="only lines after this time (ISO time or e.g. 15m)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000, help="how many recent lines")] = 100,
) -> None:
    """Print the function's recent log lines (stdout and stderr of its invocations)."""
    with client() as api:
        try:
            lines = api.logs(name, since=since, limit=limit)
        except HearthError as exc:
            if exc.status == 404 and api.exists(name):
                fail("this Hearth server has no logs API (GET /api/functions/{name}/logs)")
            raise
        for line in sorted(lines, key=sort_key):
            print_line(line)
        if follow:
            try:
                for line in api.follow_logs(name):
                    print_line(line)
            except KeyboardInterrupt:
                return
