"""DNS rebinding against a real callback delivery, run inside a network namespace of its own (`unshare
--net`, by tests/scheduler/test_callback_addresses.py): the namespace has only `lo`, which also gets a
globally routable address, so real connections to that "public" address never leave the machine.

A receiver on the public address answers 500 and closes; one on 127.0.0.1, same port, must get nothing.
The resolver gives the public address first and 127.0.0.1 after. Prints what each receiver got and the
delivery's outcome as JSON."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from hearth.scheduler.callback_transport import callback_client
from hearth.scheduler.callbacks import deliver_callback
from hearth.scheduler.queue import SqlJobQueue
from hearth.store.db import make_engine, make_sessionmaker, migrate

PUBLIC = sys.argv[1]
got: dict[str, list[str]] = {"public": [], "loopback": []}


def receiver(address: str, port: int, label: str, status: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):  # HTTP/1.0: the connection closes after each answer
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            got[label].append(self.headers["Host"])
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((address, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "addr", "add", f"{PUBLIC}/32", "dev", "lo"], check=True)
    public = receiver(PUBLIC, 0, "public", 500)
    port = public.server_port
    receiver("127.0.0.1", port, "loopback", 204)
    answers = iter([[PUBLIC]])

    async def rebinding(host: str, port: int) -> list[str]:
        return next(answers, ["127.0.0.1"])

    db = f"sqlite:///{Path(tempfile.mkdtemp()) / 'hearth.db'}"
    migrate(db)
    queue = SqlJobQueue(make_sessionmaker(make_engine(db)))

    async def go() -> str:
        async with callback_client(False, rebinding, timeout_s=5) as client:
            url = f"http://rebind.example:{port}/done"
            return await deliver_callback(client, queue, "job-1", url, {"status": "succeeded"}, attempts=3)

    status = asyncio.run(go())
    print(json.dumps({"status": status, "port": port, **got}))


if __name__ == "__main__":
    main()
