"""`hearth top`: a live table of the functions and their metrics."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from hearth.client import HearthClient, HearthError
from hearth.commands.common import client, handle_errors, human_bytes, out


def ms(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}"


def render(api: HearthClient, window: str) -> Group:
    functions = {fn["name"]: fn for fn in api.list_functions()}
    try:
        summary = api.metrics_summary(window)
    except HearthError as exc:
        if exc.status != 404:
            raise
        summary = {}  # a Hearth without the metrics endpoints: instances only
    rows = {row["function"]: row for row in summary.get("functions", [])}
    table = Table(box=None, header_style="bold")
    for column in ("FUNCTION", "VER", "CALLS", "ERR%", "THROTTLED", "P50 ms", "P95 ms", "P99 ms", "COLD", "WARM/BUSY"):
        table.add_column(column, justify="left" if column == "FUNCTION" else "right")
    for name in sorted(set(functions) | set(rows)):
        fn, row = functions.get(name, {}), rows.get(name, {})
        instances = fn.get("instances") or {}
        table.add_row(
            escape(name),
            str(fn.get("version", "-")),
            str(row.get("invocations", 0)),
            f"{100 * (row.get('error_rate') or 0):.1f}",
            str(row.get("throttles", 0)),
            ms(row.get("p50_ms")),
            ms(row.get("p95_ms")),
            ms(row.get("p99_ms")),
            str(row.get("cold_starts", 0)),
            f"{instances.get('warm', 0)}/{instances.get('busy', 0)}",
        )
    platform = summary.get("platform") or {}
    totals = summary.get("totals") or {}
    header = Text(f"Hearth {api.url}  window {window}  functions {len(functions)}", style="bold")
    if summary:
        header.append(
            f"\nrps {totals.get('rps', 0):.2f}  calls {totals.get('invocations', 0)}  "
            f"errors {100 * (totals.get('error_rate') or 0):.1f}%  sandboxes warm {platform.get('warm_sandboxes', 0)} "
            f"busy {platform.get('busy_sandboxes', 0)} stem {platform.get('stem_cells', 0)}  "
            f"queue {platform.get('queue_depth', 0)}  host CPU {platform.get('host_cpu_percent', 0):.0f}%  "
            f"memory {human_bytes(platform.get('host_memory_bytes'))}"
            f"/{human_bytes(platform.get('host_memory_total_bytes'))}",
            style="default",
        )
    else:
        header.append("\n(this Hearth serves no metrics summary: instance counts only)", style="dim")
    return Group(header, table)


@handle_errors
def top(
    interval: Annotated[float, typer.Option(min=0.2, help="seconds between refreshes")] = 2.0,
    window: Annotated[str, typer.Option(help="metrics window: 5m, 15m, 1h, 6h, 24h, 7d")] = "5m",
    once: Annotated[bool, typer.Option("--once", help="print one table and exit")] = False,
) -> None:
    """A live table of the functions: calls, errors, latency percentiles, cold starts, instances."""
    with client() as api:
        if once:
            out.print(render(api, window))
            return
        try:
            with Live(render(api, window), console=out, auto_refresh=False) as live:
                while True:
                    time.sleep(interval)
                    live.update(render(api, window), refresh=True)
        except KeyboardInterrupt:
            return
