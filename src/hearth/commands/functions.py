"""`hearth ls`, `get`, `rm`, `invoke` and `builds`."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from hearth.commands.common import UsageError, client, err, fail, handle_errors, human_bytes, out

JsonFlag = Annotated[bool, typer.Option("--json", help="print the API's JSON instead of a table")]


def ago(stamp: str | None) -> str:
    if not stamp:
        return "-"
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    if when.tzinfo is None:  # SQLite keeps no zone: Hearth stores UTC
        when = when.replace(tzinfo=UTC)
    seconds = max(0.0, (datetime.now(UTC) - when).total_seconds())
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 86400:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} d ago"


def print_json(value: Any) -> None:
    if sys.stdout.isatty():
        out.print_json(json.dumps(value, default=str))
    else:
        print(json.dumps(value, default=str))


@handle_errors
def ls(as_json: JsonFlag = False) -> None:
    """List the functions."""
    with client() as api:
        functions = api.list_functions()
    if as_json:
        print_json(functions)
        return
    if not functions:
        err.print("no functions yet: `hearth init NAME --language python`, then `hearth deploy NAME`")
        return
    table = Table(box=None, header_style="bold")
    for column in ("NAME", "RUNTIME", "VERSION", "ROUTE", "HANDLER", "WARM/BUSY", "UPDATED"):
        table.add_column(column)
    for fn in functions:
        instances = fn.get("instances") or {}
        table.add_row(
            escape(fn["name"]),
            fn.get("runtime") or fn["language"],
            str(fn["version"]),
            escape(fn["route"]),
            escape(f"image {fn['image']}" if fn.get("image") else fn["handler"]),  # an image function: its image
            f"{instances.get('warm', 0)}/{instances.get('busy', 0)}",
            ago(fn.get("updated_at")),
        )
    out.print(table)


@handle_errors
def get(name: Annotated[str, typer.Argument(help="function name")], as_json: JsonFlag = False) -> None:
    """Show a function's settings and files."""
    with client() as api:
        fn = api.get_function(name)
    if as_json:
        print_json(fn)
        return
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    skipped = {"code", "files", "env", "instances"}
    for key, value in fn.items():
        if key not in skipped and value not in (None, ""):
            table.add_row(key, escape(str(value)))
    for key, value in sorted((fn.get("env") or {}).items()):
        table.add_row(f"env.{key}", escape(value))
    instances = fn.get("instances") or {}
    table.add_row("instances", ", ".join(f"{k} {v}" for k, v in instances.items()))
    files = fn.get("files") or []
    table.add_row("files", escape(", ".join(files[:20]) + (f" (+{len(files) - 20} more)" if len(files) > 20 else "")))
    out.print(table)


@handle_errors
def rm(names: Annotated[list[str], typer.Argument(help="function name(s)")]) -> None:
    """Delete functions (their sandboxes stop; invocation records are kept)."""
    with client() as api:
        for name in names:
            api.delete(name)
            out.print(f"deleted {escape(name)}")


def read_event(data: str | None) -> bytes:
    """--data: JSON text, @file, or @- for standard input; nothing means {}."""
    if data is None:
        return b"{}"
    if data.startswith("@"):
        source = data[1:]
        try:
            raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read --data file {source!r}: {exc.strerror or exc}") from None
    else:
        raw = data.encode()
    try:
        json.loads(raw or b"{}")
    except ValueError as exc:
        raise UsageError(f"--data is not valid JSON: {exc}") from None
    return raw or b"{}"


@handle_errors
def invoke(
    name: Annotated[str, typer.Argument(help="function name")],
    data: Annotated[str | None, typer.Option("--data", "-d", help="the event: JSON, @file or @- (stdin)")] = None,
    run_async: Annotated[bool, typer.Option("--async", help="queue it and print the invocation id")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="print invocation id, duration, path")] = False,
) -> None:
    """Invoke a function; prints its result as JSON (exit code 1 if it failed)."""
    event = read_event(data)
    with client() as api:
        response = api.invoke(name, event, mode="async" if run_async else None)
    headers = response.headers
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if response.status_code >= 400:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        message = f"{error.get('type', response.status_code)}: {error.get('message', body)}"
        if error.get("traceback"):
            err.print(escape(str(error["traceback"]).rstrip()))
        fail(message + (f" (invocation {error['invocation_id']})" if error.get("invocation_id") else ""))
    if run_async and response.status_code != 202:
        err.print("[yellow]note:[/yellow] this Hearth has no async queue: the call ran synchronously")
    if verbose or run_async:
        path, duration = headers.get("x-hearth-path", "-"), headers.get("x-hearth-duration-ms", "-")
        invocation = headers.get("x-hearth-invocation-id") or (isinstance(body, dict) and body.get("invocation_id"))
        err.print(f"[dim]invocation {invocation}, {duration} ms, {path}[/dim]")
    print(json.dumps(body, indent=2 if sys.stdout.isatty() else None))


@handle_errors
def builds(
    name: Annotated[str, typer.Argument(help="function name")],
    build_id: Annotated[str | None, typer.Argument(help="show this build's log")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List a function's dependency builds, or show one build's log."""
    with client() as api:
        if build_id:
            build = api.build(name, build_id)
            if as_json:
                print_json(build)
                return
            err.print(
                f"[bold]{build['id']}[/bold] {build['status']} ({build['manifest']}, layer {build['layer_sha256'][:12]}"
                f"{', cached' if build['cached'] else ''})"
            )
            sys.stdout.write(build.get("log") or "")
            if build["status"] == "failed":
                raise typer.Exit(1)
            return
        rows = api.builds(name)
    if as_json:
        print_json(rows)
        return
    table = Table(box=None, header_style="bold")
    for column in ("ID", "STATUS", "MANIFEST", "LAYER", "CACHED", "VERSION", "SIZE", "TOOK", "WHEN"):
        table.add_column(column)
    for b in rows:
        took = f"{b['duration_ms'] / 1000:.1f} s" if b.get("duration_ms") is not None else "-"
        table.add_row(
            b["id"],
            b["status"],
            b["manifest"],
            b["layer_sha256"][:12],
            "yes" if b["cached"] else "no",
            str(b.get("version") or "-"),
            human_bytes(b.get("layer_bytes")),
            took,
            ago(b.get("created_at")),
        )
    out.print(table)
