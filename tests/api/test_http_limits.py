"""The HTTP front under hostile clients, on raw sockets against a real server: header size, slow headers,
slow bodies, too many connections; and ordinary requests (large-ish, in pieces) still served."""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hearth.testing import HearthServer

MAX_CONNECTIONS = 6
# Generous: the bounds below are 2 s; this is how long a test waits for the server to act on them.
PATIENCE_S = 30.0


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory, runtime_images: dict[str, str]) -> Iterator[HearthServer]:
    server = HearthServer(
        tmp_path_factory.mktemp("front") / "data",
        env={
            "HEARTH_HTTP_HEADER_TIMEOUT_S": "2",
            "HEARTH_HTTP_BODY_TIMEOUT_S": "2",
            "HEARTH_HTTP_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        },
    )
    server.start()
    yield server
    server.stop()


def connect(server: HearthServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE_S)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body: (status, headers, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: hearth\r\n{extra}\r\n".encode()


def closed_or_answered(sock: socket.socket, timeout_s: float) -> bytes | None:
    """What the server sent before closing (b"" if nothing), or None if it kept the connection open."""
    sock.settimeout(timeout_s)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return received


def test_ordinary_requests_are_served(front: HearthServer) -> None:
    with connect(front) as sock:
        sock.sendall(get("/healthz"))
        assert read_response(sock)[0] == 200
        # 60 KiB of headers, under the 64 KiB bound, in one piece and then byte-groups with pauses
        big = "X-Big: " + "a" * 60_000 + "\r\n"
        sock.sendall(get("/healthz", big))
        assert read_response(sock)[0] == 200
        request = get("/healthz", "X-Small: 1\r\n")
        for i in range(0, len(request), 7):
            sock.sendall(request[i : i + 7])
            time.sleep(0.05)
        assert read_response(sock)[0] == 200
        # a body in pieces, each well inside the body bound
        body = json.dumps({"name": "bad name!", "code": "x"}).encode()
        head = (
            f"POST /api/functions HTTP/1.1\r\nHost: hearth\r\nAuthorization: Bearer {front.api_key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode())
        for i in range(0, len(body), 10):
            time.sleep(0.2)
            sock.sendall(body[i : i + 10])
        assert read_response(sock)[0] == 422  # the app saw the whole body (and refused the name)


def test_a_small_response_arrives_in_one_write(front: HearthServer) -> None:
    """The head and a small body leave in one write (one segment): the first recv holds the whole response.

    uvicorn alone writes them apart, and a client reading as soon as bytes arrive gets the head first.
    """
    with connect(front) as sock:
        for _ in range(40):
            sock.sendall(get("/healthz"))
            first = sock.recv(65536)
            head, separator, body = first.partition(b"\r\n\r\n")
            assert separator, first
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            assert length > 0 and len(body) == length, first
        sock.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: hearth\r\n\r\n")  # a HEAD response: a head alone
        assert read_head(sock).startswith(b"HTTP/1.1 ")


def read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


def test_a_64_mb_header_is_refused_early(front: HearthServer) -> None:
    chunk = b"a" * 65536
    sent = 0
    with connect(front) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: hearth\r\nX-Big: ")
        answered = False
        try:
            while sent < 64 * 2**20:
                sock.sendall(chunk)
                sent += len(chunk)
                if select.select([sock], [], [], 0)[0]:  # the server has answered (or closed): stop sending
                    answered = True
                    break
            if not answered:
                sock.sendall(b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, _, body = read_response(sock)
    assert status == 431, (status, body)
    assert json.loads(body)["error"]["type"] == "RequestHeaderFieldsTooLarge"
    assert sent < 16 * 2**20  # refused after about the bound (plus socket buffers), long before 64 MB
    with connect(front) as sock:  # (not front.client: its kept-alive connection would hold a slot)
        sock.sendall(get("/healthz"))
        assert read_response(sock)[0] == 200


def test_a_head_just_over_the_bound_in_one_piece_is_refused(front: HearthServer) -> None:
    with connect(front) as sock:
        sock.sendall(get("/healthz", "X-Big: " + "a" * 70_000 + "\r\n"))
        assert read_response(sock)[0] == 431
    with connect(front) as sock:  # many small headers
        sock.sendall(get("/healthz", "".join(f"X-{i}: {'b' * 90}\r\n" for i in range(800))))
        assert read_response(sock)[0] == 431
    with connect(front) as sock:  # a long URL
        sock.sendall(get("/healthz?q=" + "c" * 70_000))
        assert read_response(sock)[0] == 431


def test_slowloris_headers_are_cut_off(front: HearthServer) -> None:
    with connect(front) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: hearth\r\nX-Slow: ")
        started = time.monotonic()
        answer = None
        while time.monotonic() - started < PATIENCE_S:
            try:
                sock.sendall(b"a")
            except (BrokenPipeError, ConnectionResetError):
                answer = b""
                break
            answer = closed_or_answered(sock, 0.5)
            if answer is not None:
                break
        assert answer is not None, "the server kept a connection dribbling its headers open"
        assert answer.startswith(b"HTTP/1.1 408 ") or answer == b"", answer
    # a connection that never sends anything is closed too (silently)
    with connect(front) as idle:
        assert closed_or_answered(idle, PATIENCE_S) == b""


def test_a_slow_body_is_cut_off(front: HearthServer) -> None:
    with connect(front) as sock:
        sock.sendall(
            (
                f"POST /api/functions HTTP/1.1\r\nHost: hearth\r\nAuthorization: Bearer {front.api_key}\r\n"
                "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
            ).encode()
        )
        started = time.monotonic()
        answer = None
        while time.monotonic() - started < PATIENCE_S:
            try:
                sock.sendall(b" ")
            except (BrokenPipeError, ConnectionResetError):
                answer = b""
                break
            answer = closed_or_answered(sock, 0.5)
            if answer is not None:
                break
        assert answer is not None, "the server kept a connection dribbling its body open"
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["type"] == "RequestTimeout"


def test_a_steady_upload_longer_than_the_body_timeout_is_not_cut(front: HearthServer) -> None:
    """The body bound grows with what arrives (1 s per 64 KiB): 1 MB at ~256 KiB/s takes about twice the 2 s bound."""
    body = json.dumps({"name": "steady", "language": "python", "code": "#" + "a" * 1_000_000}).encode()
    head = (
        f"POST /api/functions HTTP/1.1\r\nHost: hearth\r\nAuthorization: Bearer {front.api_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    with connect(front) as sock:
        sock.sendall(head.encode())
        started = time.monotonic()
        for i in range(0, len(body), 16384):
            sock.sendall(body[i : i + 16384])
            time.sleep(1 / 16)
        took = time.monotonic() - started
        status, _, answer = read_response(sock)
    assert took > 2  # the upload did outlast the body timeout (else this test shows nothing)
    assert status != 408 and status < 500, (status, answer)  # the app's own answer, after the whole body


def open_served(server: HearthServer, count: int) -> list[socket.socket]:
    """`count` kept-alive connections, each having had a request answered 200."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(connect(server))
            socks[-1].sendall(get("/healthz"))
            assert read_response(socks[-1])[0] == 200
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def test_connections_over_the_cap_get_503(front: HearthServer) -> None:
    # connections of earlier tests may still be closing on the server: wait until the cap is free
    deadline = time.monotonic() + PATIENCE_S
    while True:
        try:
            socks = open_served(front, MAX_CONNECTIONS)
            break
        except AssertionError:
            assert time.monotonic() < deadline, "the server never served its full cap of connections"
            time.sleep(0.5)
    try:
        with connect(front) as extra:
            extra.sendall(get("/healthz"))
            status, headers, body = read_response(extra)
            assert status == 503 and headers["retry-after"] == "1" and headers["connection"] == "close"
            error = json.loads(body)["error"]
            assert error["type"] == "ServiceUnavailable" and "HEARTH_HTTP_MAX_CONNECTIONS" in error["message"]
        for sock in socks:  # connections already open keep being served
            sock.sendall(get("/healthz"))
            assert read_response(sock)[0] == 200
    finally:
        for sock in socks:
            sock.close()
    deadline = time.monotonic() + PATIENCE_S
    while True:  # once they are closed, new connections are served again
        with connect(front) as sock:
            sock.sendall(get("/healthz"))
            if read_response(sock)[0] == 200:
                break
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_bounds_turned_off_leave_uvicorns_protocol(tmp_path: Path, runtime_images: dict[str, str]) -> None:
    """All bounds 0: the server runs uvicorn's httptools protocol without bounds (what `make bench` compares with)."""
    server = HearthServer(
        tmp_path / "data",
        env={
            "HEARTH_HTTP_MAX_HEADER_BYTES": "0",
            "HEARTH_HTTP_HEADER_TIMEOUT_S": "0",
            "HEARTH_HTTP_BODY_TIMEOUT_S": "0",
            "HEARTH_HTTP_MAX_CONNECTIONS": "0",
        },
    )
    server.start()
    try:
        with connect(server) as sock:
            sock.sendall(get("/healthz", "X-Big: " + "a" * 70_000 + "\r\n"))
            assert read_response(sock)[0] == 200
    finally:
        server.stop()
