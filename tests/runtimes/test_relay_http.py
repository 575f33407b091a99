"""The relay's Runtime API at the HTTP level, without Docker: what its hand-written HTTP/1.1 server keeps of
net/http's behaviour (relay/httpconn.go). This test plays both the host (frames on the agent socket) and
the runtime (raw HTTP on loopback); the relay's child is a `sleep` that never calls the API itself. The
same tests pass against the net/http relay this server replaced.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hearth.engine import provided
from hearth.engine.protocol import HEADER, decode_body

NEXT = "/2018-06-01/runtime/invocation/next"
HOST = "Host: 127.0.0.1\r\n"


class Relay:
    def __init__(self, directory: Path) -> None:
        path = str(directory / "agent.sock")
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(path)
        listener.listen(1)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        env = {"PATH": "/usr/bin:/bin", "HEARTH_AGENT_SOCKET": path, "HEARTH_RUNTIME_API": f"127.0.0.1:{self.port}"}
        self.process = subprocess.Popen([str(provided.ensure_relay() / "relay")], env=env, stderr=subprocess.DEVNULL)
        listener.settimeout(10)
        self.host, _ = listener.accept()
        listener.close()
        self.host.settimeout(10)
        self.frames = self.host.makefile("rb")
        assert self.receive()[0]["type"] == "hello"
        init = {"type": "init", "command": ["sleep", "1000"], "working_dir": "/tmp", "env": {}, "max_result_bytes": 100}
        self.send({**init, "function_arn": "arn:aws:lambda:us-east-1:000000000000:function:t"})

    def send(self, frame: dict[str, Any]) -> None:
        body = json.dumps(frame).encode()
        self.host.sendall(HEADER.pack(len(body)) + body)

    def receive(self) -> tuple[dict[str, Any], bytes | None]:
        (length,) = HEADER.unpack(self.frames.read(HEADER.size))
        return decode_body(self.frames.read(length))

    def connect(self) -> socket.socket:
        conn = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return conn

    def next_event(self, conn: socket.socket, invocation_id: str, first: bool = False) -> bytes:
        """GET next on `conn`, the host sends an invoke: the runtime's view of it."""
        conn.sendall(f"GET {NEXT} HTTP/1.1\r\n{HOST}\r\n".encode())
        if first:
            assert self.receive()[0]["type"] == "ready"
        self.send({"type": "invoke", "id": invocation_id, "event": {"n": 1}, "timeout_ms": 5000})
        return read_response(conn)

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        self.host.close()


def post(conn: socket.socket, invocation_id: str, headers: str, body: bytes = b"") -> None:
    """POST .../invocation/ID/response with these header lines ("Name: value\\r\\n"...)."""
    head = f"POST /2018-06-01/runtime/invocation/{invocation_id}/response HTTP/1.1\r\n{HOST}{headers}\r\n"
    conn.sendall(head.encode() + body)


def read_all(conn: socket.socket) -> bytes:
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    return data


def read_response(conn: socket.socket, head_only: bool = False) -> bytes:
    """One HTTP response (head, and the body its Content-Length says), or what came before the end."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in [] if head_only else head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def header(response: bytes, name: str) -> str | None:
    for line in response.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.decode().lower() == name.lower():
            return value.decode().strip()
    return None


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    if shutil.which("go") is None and not provided.relay_cache_root().exists():
        pytest.skip("no Go toolchain on this host to build the relay")
    harness = Relay(tmp_path)
    try:
        yield harness
    finally:
        harness.close()


def test_keep_alive_content_length_and_the_next_answer(relay: Relay) -> None:
    with relay.connect() as conn:
        event = relay.next_event(conn, "a1", first=True)
        assert status(event) == 200 and event.endswith(b'\r\n\r\n{"n": 1}')
        assert header(event, "Lambda-Runtime-Aws-Request-Id") == "a1"
        assert header(event, "Content-Type") == "application/json" and header(event, "Date")
        post(conn, "a1", "Content-Length: 9\r\n")
        conn.sendall(b'{"ok": 1}')
        frame, payload = relay.receive()
        assert (frame["id"], frame["ok"], payload) == ("a1", True, b'{"ok": 1}')
        answer = read_response(conn)
        assert status(answer) == 202 and answer.endswith(b'{"status":"OK"}')
        assert relay.next_event(conn, "a2").endswith(b'{"n": 1}')  # the same connection serves on


def test_chunked_response_with_error_trailers(relay: Relay) -> None:
    with relay.connect() as conn:
        relay.next_event(conn, "c1", first=True)
        detail = base64.b64encode(json.dumps({"errorMessage": "m", "stackTrace": ["a", "b"]}).encode()).decode()
        trailers = f"Lambda-Runtime-Function-Error-Type: Oops\r\nLambda-Runtime-Function-Error-Body: {detail}\r\n"
        post(
            conn,
            "c1",
            "Transfer-Encoding: chunked\r\n",
            b"3\r\n[1,\r\n2;ext=1\r\n2]\r\n0\r\n" + trailers.encode() + b"\r\n",
        )
        frame, _ = relay.receive()
        assert not frame["ok"] and frame["error"] == {"type": "Oops", "message": "m", "traceback": "a\nb"}
        assert status(read_response(conn)) == 202
        relay.next_event(conn, "c2")
        post(conn, "c2", "Transfer-Encoding: chunked\r\n")
        conn.sendall(b"4\r\n[1,2\r\n1\r\n]\r\n0\r\n\r\n")
        frame, payload = relay.receive()
        assert frame["ok"] and payload == b"[1,2]"
        assert status(read_response(conn)) == 202


def test_expect_100_continue(relay: Relay) -> None:
    with relay.connect() as conn:
        relay.next_event(conn, "e1", first=True)
        post(conn, "e1", "Content-Length: 4\r\nExpect: 100-continue\r\n")
        assert read_response(conn) == b"HTTP/1.1 100 Continue\r\n\r\n"
        conn.sendall(b"true")
        frame, payload = relay.receive()
        assert (frame["id"], frame["ok"], payload) == ("e1", True, b"true")
        assert status(read_response(conn)) == 202


def test_too_large_and_wrong_ids(relay: Relay) -> None:
    with relay.connect() as conn:
        relay.next_event(conn, "t1", first=True)
        post(conn, "nope", "Content-Length: 2\r\n", b"{}")
        answer = read_response(conn)
        assert status(answer) == 400
        assert answer.endswith(b'{"errorMessage":"Invalid request ID","errorType":"InvalidRequestID"}')
        post(conn, "t1", "Content-Length: 200\r\n", b"x" * 200)  # over max_result_bytes (100), read away
        frame, _ = relay.receive()
        assert frame["error"]["type"] == "ResultTooLarge"
        answer = read_response(conn)
        assert status(answer) == 413 and b'"errorType":"RequestEntityTooLarge"' in answer
        assert header(answer, "Connection") is None  # the rest of the body was read: the connection stays


def test_http10_keep_alive_and_a_next_cancelled_by_its_connection_closing(relay: Relay) -> None:
    gone = relay.connect()
    gone.sendall(f"GET {NEXT} HTTP/1.1\r\n{HOST}\r\n".encode())
    assert relay.receive()[0]["type"] == "ready"
    gone.close()  # its `next` no longer waits: another connection's may
    with relay.connect() as conn:
        for _ in range(50):
            conn.sendall(f"GET {NEXT} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".encode())
            conn.settimeout(0.2)
            try:
                early = read_response(conn)  # 403 while the closed connection's `next` still counted
            except TimeoutError:
                break
            assert status(early) == 403
        conn.settimeout(10)
        relay.send({"type": "invoke", "id": "k1", "event": [1], "timeout_ms": 5000})
        event = read_response(conn)
        assert event.startswith(b"HTTP/1.0 200 OK\r\n") and header(event, "Connection") == "keep-alive"
        conn.sendall(b"POST /2018-06-01/runtime/invocation/k1/response HTTP/1.0\r\nContent-Length: 1\r\n\r\n1")
        assert relay.receive()[1] == b"1"
        answer = read_response(conn)  # no keep-alive asked: answered, then closed
        assert answer.startswith(b"HTTP/1.0 202 Accepted\r\n") and conn.recv(1) == b""


HEAD_OK = b"Host: h\r\n"
CANNOT_TAKE = [
    (b"GARBAGE\r\n", b"400 Bad Request"),
    (b"GET /x HTTP/1.1\r\n", b"400 Bad Request: missing required Host header"),
    (b"GET /x HTTP/2.0\r\n" + HEAD_OK, b"505 HTTP Version Not Supported: unsupported protocol version"),
    (b"POST /x HTTP/1.1\r\n" + HEAD_OK + b"Transfer-Encoding: gzip\r\n", b"501 Not Implemented"),
    (b"POST /x HTTP/1.1\r\n" + HEAD_OK + b"Content-Length: abc\r\n", b"400 Bad Request"),
    (b"POST /x HTTP/1.1\r\n" + HEAD_OK + b"Expect: foo\r\nContent-Length: 0\r\n", b"417 Expectation Failed"),
    (b"GET /x HTTP/1.1\r\n" + HEAD_OK + b"X: " + b"a" * (1100 << 10) + b"\r\n", b"431 Request Header Fields Too Large"),
]


@pytest.mark.parametrize(("head", "expected"), CANNOT_TAKE, ids=[status.decode() for _, status in CANNOT_TAKE])
def test_requests_it_cannot_take_get_net_http_answers_and_a_closed_connection(
    relay: Relay, head: bytes, expected: bytes
) -> None:
    with relay.connect() as conn:
        conn.sendall(head + b"\r\n")
        answer = read_all(conn)  # answered, then closed
        assert answer.startswith(b"HTTP/1.1 " + expected + b"\r\n") and header(answer, "Connection") == "close"


def test_routes_methods_and_paths(relay: Relay) -> None:
    with relay.connect() as conn:
        for request_line, expected in (
            ("GET /foo HTTP/1.1", 404),
            ("POST /2018-06-01/runtime/invocation/next HTTP/1.1", 405),
            ("GET /2018-06-01/runtime/invocation/a/b/response HTTP/1.1", 404),
            ("GET /2018-06-01/runtime/invocation/a%2Fb/response HTTP/1.1", 404),  # decoded, as net/url does
            ("GET /2018-06-01/runtime/invocation/a/response HTTP/1.1", 405),
        ):
            conn.sendall(f"{request_line}\r\n{HOST}Content-Length: 0\r\n\r\n".encode())
            assert status(read_response(conn)) == expected, request_line
        conn.sendall(f"HEAD {NEXT} HTTP/1.1\r\n{HOST}\r\n".encode())
        answer = read_response(conn, head_only=True)
        assert status(answer) == 405 and int(header(answer, "Content-Length") or 0) > 0
        conn.sendall(f"GET /foo HTTP/1.1\r\n{HOST}\r\n".encode())
        assert status(read_response(conn)) == 404  # nothing of a body came after the HEAD answer
