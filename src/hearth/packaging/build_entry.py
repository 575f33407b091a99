"""A build's entry point, run INSIDE the build container by the image's own python3 (stdlib only).

Reads /hearth/job.json (written by hearth.packaging.sandbox), relays 127.0.0.1:PORT to the host's
proxy socket (the container has no network of its own), runs the install command with its output on
stdout (the build log), and on success sends the output directory as a tar stream to the host's
result socket. Symlinks go as symlinks; the host unpacks with tarfile's `data` filter.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading


def relay(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
        target.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def forward(client: socket.socket, proxy_socket: str) -> None:
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(proxy_socket)
    except OSError:
        client.close()
        return
    back = threading.Thread(target=relay, args=(upstream, client), daemon=True)
    back.start()
    relay(client, upstream)
    back.join()
    client.close()
    upstream.close()


def serve_proxy(port: int, proxy_socket: str) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)

    def accept() -> None:
        while True:
            client, _ = listener.accept()
            threading.Thread(target=forward, args=(client, proxy_socket), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


def send_result(output: str, result_socket: str) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(result_socket)
    with sock.makefile("wb") as stream, tarfile.open(fileobj=stream, mode="w|") as archive:
        for name in sorted(os.listdir(output)):
            archive.add(os.path.join(output, name), arcname=name)
    sock.close()


def main() -> int:
    with open(sys.argv[1] if len(sys.argv) > 1 else "/hearth/job.json") as file:
        job = json.load(file)
    for directory in (os.environ["HOME"], os.environ["TMPDIR"], job["workdir"]):
        os.makedirs(directory, exist_ok=True)
    for name in job.get("copy", []):
        shutil.copyfile(os.path.join(job["files"], name), os.path.join(job["workdir"], name))
    serve_proxy(job["proxy_port"], job["proxy_socket"])
    sys.stdout.flush()
    code = subprocess.run(job["command"], cwd=job["workdir"], stdin=subprocess.DEVNULL, check=False).returncode
    if code != 0 or not job.get("output"):
        return code
    os.makedirs(job["output"], exist_ok=True)  # an install that resolves to nothing gives an empty layer
    send_result(job["output"], job["result_socket"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
