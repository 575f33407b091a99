"""`hearth deploy [DIR]`: zip a directory, send it with the settings of its hearth.toml, follow the build.

The deploy request waits on the server until the dependency build is done and the new version is
live; meanwhile this command polls the function's builds and prints the install log as it grows.
"""

from __future__ import annotations

import base64
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from hearth.client import HearthClient, HearthError
from hearth.commands.common import UsageError, client, err, handle_errors, human_bytes, out
from hearth.commands.go_build import build_go_bootstrap, needs_go_build
from hearth.commands.image_build import build_function_image, has_dockerfile
from hearth.commands.manifest import load_manifest
from hearth.packaging.bundle import DEFAULT_EXCLUDES, BundleError, pack_files, read_directory

POLL_S = 0.5
MAX_UPLOAD_BYTES = 250 * 1024 * 1024


@handle_errors
def deploy(
    directory: Annotated[Path, typer.Argument(help="the function's directory, holding hearth.toml")] = Path("."),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no build log, only the result")] = False,
) -> None:
    """Deploy the function in DIR (create it, or replace every setting and the code)."""
    manifest = load_manifest(directory)
    try:
        files = read_directory(directory, (*DEFAULT_EXCLUDES, *manifest.exclude), max_bytes=MAX_UPLOAD_BYTES)
    except BundleError as exc:
        raise UsageError(str(exc)) from None
    name = manifest.name
    if has_dockerfile(directory):  # an image function: the image is built here, the server gets its tag
        settings = {**manifest.settings, "image": build_function_image(directory, name, files, quiet)}
        err.print(f"Deploying [bold]{escape(name)}[/bold]: image {escape(settings['image'])}")
    else:
        if needs_go_build(manifest.settings, files):  # Go source (go.mod, no bootstrap): compiled in a sandbox
            files = {**files, "bootstrap": build_go_bootstrap(directory, quiet)}
        bundle = pack_files(files)
        settings = {**manifest.settings, "zip_base64": base64.b64encode(bundle).decode("ascii")}
        err.print(f"Deploying [bold]{escape(name)}[/bold]: {len(files)} files, {human_bytes(len(bundle))} zipped")
    with client() as api:
        create = not api.exists(name)
        known = {b["id"] for b in api.builds(name)} if not create else set()
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(api.deploy, settings, create=create)
            shown: list[str] = []  # build ids whose log was printed live
            try:
                result = follow_build(api, name, known, future, quiet, shown)
            except HearthError as exc:
                report_failure(api, name, exc, create, log_shown=bool(shown) and not quiet)
                raise
    print_result(api, result, create)


def follow_build(
    api: HearthClient, name: str, known: set[str], future: Future[dict[str, Any]], quiet: bool, shown: list[str]
) -> Any:
    """Print the new build's log while the deploy request runs; returns the deploy's answer."""
    stop = threading.Event()
    build_id: str | None = None
    offset = 0
    with err.status("uploading and preparing…", spinner="dots") as status:
        while not future.done() and not stop.wait(POLL_S):
            try:
                if build_id is None:
                    fresh = [b for b in api.builds(name, limit=5) if b["id"] not in known]
                    if fresh:
                        build_id = fresh[0]["id"]
                        status.update(f"installing dependencies ({fresh[0]['manifest']})…")
                if build_id is not None:
                    build = api.build(name, build_id, offset)
                    offset = print_log(build, offset, quiet)
                    shown.append(build_id)
            except HearthError:
                continue  # the function may not exist yet (first deploy): keep waiting for the deploy
        result = future.result()
    if build_id is None and result.get("build_id") and result["build_id"] not in known:
        build_id = result["build_id"]
    if build_id is not None:
        with_log = api.build(name, build_id, offset)
        print_log(with_log, offset, quiet)
        state = "reused a cached layer" if with_log.get("cached") else "built"
        err.print(
            f"[green]dependencies {state}[/green] ({with_log.get('layer_files')} files, "
            f"{human_bytes(with_log.get('layer_bytes'))}) in {(with_log.get('duration_ms') or 0) / 1000:.1f} s"
        )
    return result


def print_log(build: dict[str, Any], offset: int, quiet: bool) -> int:
    text = build.get("log") or ""
    if text and not quiet:
        for line in text.splitlines():
            err.print(f"  [dim]{escape(line)}[/dim]")
    return offset + len(text)


def report_failure(api: HearthClient, name: str, exc: HearthError, create: bool, *, log_shown: bool) -> None:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    if exc.error_type == "BuildFailed":
        tail = str(error.get("log_tail") or "")
        if tail and not log_shown:
            err.print("[red]build log (end):[/red]")
            for line in tail.splitlines()[-25:]:
                err.print(f"  {escape(line)}")
        if not create:
            try:
                current = api.get_function(name)
                err.print(f"[yellow]version {current['version']} of {name} keeps serving[/yellow]")
            except HearthError:
                pass


def print_result(api: HearthClient, fn: dict[str, Any], created: bool) -> None:
    verb = "created" if created else "updated"
    out.print(
        f"[green]✓[/green] {verb} [bold]{escape(fn['name'])}[/bold] version {fn['version']} "
        f"({fn.get('runtime') or fn['language']}, handler {escape(fn['handler'])})"
    )
    out.print(f"  invoke: hearth invoke {fn['name']} --data '{{}}'")
    out.print(f"  HTTP:   {api.url}/fn{fn['route'].rstrip('/') or ''}")
