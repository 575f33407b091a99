"""The only way out of a build: an HTTP CONNECT proxy on a Unix socket, to the package index hosts only.

A build container has no network (`network_mode=none`); its entry script relays 127.0.0.1:3128 to
this socket, bind-mounted into the container, and pip / npm use it as their HTTPS proxy. A CONNECT
to a host:port outside the allowed set (Hearth's own API, /metrics, anything on loopback or the LAN
that the operator's index settings do not name) gets a 403, and the refusal goes into the build log.
Only CONNECT is served: the index is spoken to over TLS end to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path

MAX_HEAD = 8192
CONNECT_TIMEOUT_S = 30.0


class ConnectProxy:
    def __init__(self, path: Path, allowed: set[tuple[str, int]], log: Callable[[str], None]) -> None:
        self.path = path
        self.allowed = {(host.lower(), port) for host, port in allowed}
        self.log = log
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        os.chmod(self.path, 0o666)  # the build runs as nobody

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._tunnel(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEAD:
            return
        request = head.split(b"\r\n", 1)[0].decode("latin-1")
        method, _, rest = request.partition(" ")
        target = rest.partition(" ")[0]
        host, _, port_text = target.rpartition(":")
        host = host.strip("[]").lower()
        port = int(port_text) if port_text.isdigit() else -1
        if method != "CONNECT" or (host, port) not in self.allowed:
            self.log(f"build proxy: refused {method} {target[:200]} (only the package index hosts are reachable)\n")
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                up_reader, up_writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError) as exc:
            self.log(f"build proxy: cannot reach {host}:{port}: {exc}\n")
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()
