"""The `hearth` command line."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import typer

from hearth.api.http_limits import HttpLimits
from hearth.api.server import run_server
from hearth.commands import deploy, functions, logs, scaffold, top
from hearth.config import get_settings

app = typer.Typer(
    help="Hearth: a self-hosted serverless platform. Talks to HEARTH_API_URL with HEARTH_API_KEY.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
REPO_SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


@app.command()
def serve(
    host: str = typer.Option(None, help="bind address (default HEARTH_HOST or 127.0.0.1)"),
    port: int = typer.Option(None, help="port (default HEARTH_PORT or 8000)"),
    dashboard: bool = typer.Option(False, "--dashboard/--no-dashboard", help="also run the web dashboard"),
    dashboard_port: int = typer.Option(None, help="dashboard port (default HEARTH_DASHBOARD_PORT or 8501)"),
) -> None:
    """Run the Hearth API server in the foreground (Ctrl-C stops it, its sandboxes and the dashboard)."""
    _configure_logging()
    settings = get_settings()
    host, port = host or settings.host, port or settings.port
    child = None
    if dashboard:
        from hearth.api.auth import DASHBOARD_KEY_FILE, load_or_create_dashboard_key
        from hearth.dashboard import launcher
        from hearth.store.private import secure_data_dir

        dashboard_port = dashboard_port or settings.dashboard_port
        data_dir = settings.resolved_data_dir
        secure_data_dir(data_dir)
        load_or_create_dashboard_key(data_dir)  # before the dashboard's first page; the server uses the same file
        child = launcher.start(
            host=settings.dashboard_host,
            port=dashboard_port,
            api_url=launcher.api_url_for(host, port),
            key_file=data_dir / DASHBOARD_KEY_FILE,
            allowed_hosts=settings.dashboard_allowed_hosts or None,
        )
        print(f"Hearth dashboard on http://{settings.dashboard_host}:{dashboard_port}", file=sys.stderr, flush=True)
        # uvicorn re-raises the SIGTERM it shut down on; exit through `finally` so the dashboard stops first
        signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        limits = HttpLimits(
            max_header_bytes=settings.http_max_header_bytes,
            header_timeout_s=settings.http_header_timeout_s,
            body_timeout_s=settings.http_body_timeout_s,
            body_min_rate=settings.http_body_min_rate,
            max_connections=settings.http_max_connections,
        )
        run_server(host, port, settings.http_keep_alive_s, limits)
    finally:
        if child is not None:
            launcher.stop(child)


@app.command()
def images(force: bool = typer.Option(False, help="rebuild even if present")) -> None:
    """Build the runtime images from Debian's packages (cached by recipe hash)."""
    from hearth.engine import provided
    from hearth.images import aws_sdk, containers
    from hearth.images import provided as provided_images

    args = ["--force"] if force else []
    raise typer.Exit(containers.main(args) or aws_sdk.main([]) or provided_images.main([]) or provided.main([]))


@app.command()
def up(
    dashboard: bool = typer.Option(True, "--dashboard/--no-dashboard", help="also run the web dashboard"),
) -> None:
    """Install what is missing (Docker, images), then start Hearth (API and dashboard) in the foreground."""
    script = REPO_SCRIPTS / ("install-system.sh" if os.geteuid() == 0 else "ensure-docker.sh")
    if script.exists() and subprocess.call(["bash", str(script)]) != 0:
        raise typer.Exit(1)
    from hearth.engine import provided
    from hearth.images import aws_sdk, containers
    from hearth.images import provided as provided_images

    if containers.main([]) or aws_sdk.main([]) or provided_images.main([]) or provided.main([]):
        raise typer.Exit(1)
    settings = get_settings()
    print(f"Hearth API on http://{settings.host}:{settings.port} (docs at /docs)", file=sys.stderr, flush=True)
    serve(host=None, port=None, dashboard=dashboard, dashboard_port=None)  # type: ignore[arg-type]


# Commands that talk to a running Hearth (exit codes: 0 ok, 1 API or function error, 2 usage).
app.command()(deploy.deploy)
app.command()(functions.ls)
app.command()(functions.get)
app.command()(functions.invoke)
app.command()(logs.logs)
app.command()(functions.rm)
app.command()(functions.builds)
app.command()(scaffold.init)
app.command()(top.top)


if __name__ == "__main__":
    app()
