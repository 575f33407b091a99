"""The HTTP client callbacks leave through: the address checked is the address connected to.

Checking a URL's host and then letting the HTTP client connect by name resolves it twice: a name whose
DNS answer changes in between (DNS rebinding) passes the check with a public address and is then
connected to a private one. Here the connection itself resolves the name once (with a resolver that
is a parameter, so tests control it), checks every address it got against the policy
(`callback_addresses`), and connects to those checked addresses only. It is an httpcore network
backend: the URL keeps its host name, so the `Host` header, TLS SNI and certificate verification are
for that name, and pooled connections are keyed by it (a connection is only reused for the name it was
checked and verified for).

httpx's transport has no parameter for the network backend: `PinnedTransport` builds the same
connection pool with one. No proxy is used (`trust_env` off): a proxy would connect instead of us.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpcore
import httpx

from hearth.scheduler.callback_addresses import refusal

Resolver = Callable[[str, int], Awaitable[list[str]]]
MAX_ADDRESSES_TRIED = 3  # of a name's addresses, in the resolver's order (connect timeout each)


class CallbackRefused(Exception):
    """The callback's host resolves to an address callbacks may not reach (or does not resolve)."""


async def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver, in its order, without repeats."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def checked_addresses(host: str, port: int, resolve: Resolver, allow_private: bool) -> list[str]:
    """`host` resolved once; raises CallbackRefused unless every address may be reached."""
    try:
        addresses = await resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise CallbackRefused(f"cannot resolve {host!r}") from exc
    if not addresses:
        raise CallbackRefused(f"cannot resolve {host!r}")
    if not allow_private:
        for address in addresses:
            why = refusal(address)
            if why:
                raise CallbackRefused(f"{host!r}: {why} (HEARTH_CALLBACK_ALLOW_PRIVATE allows it)")
    return addresses


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects a name only to the addresses one resolution of it gave and the policy accepted."""

    def __init__(
        self, resolve: Resolver, allow_private: bool, inner: httpcore.AsyncNetworkBackend | None = None
    ) -> None:
        self.resolve = resolve
        self.allow_private = allow_private
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await checked_addresses(host, port, self.resolve, self.allow_private)
        failure: Exception | None = None
        for address in addresses[:MAX_ADDRESSES_TRIED]:
            try:
                return await self.inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise CallbackRefused("callbacks do not use Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with the pinning backend (its own `__init__` takes no backend: the pool, the one
    attribute its request handling uses, is built here the way httpx builds it)."""

    def __init__(
        self,
        resolve: Resolver,
        allow_private: bool,
        verify: ssl.SSLContext | bool = True,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PinnedBackend(resolve, allow_private, inner),
        )


def callback_client(
    allow_private: bool,
    resolve: Resolver = system_resolver,
    verify: ssl.SSLContext | bool = True,
    inner: httpcore.AsyncNetworkBackend | None = None,
    timeout_s: float = 10.0,
) -> httpx.AsyncClient:
    """The client callbacks are POSTed with: pinned addresses, no redirects, no proxies."""
    return httpx.AsyncClient(
        transport=PinnedTransport(resolve, allow_private, verify, inner),
        timeout=timeout_s,
        follow_redirects=False,
        trust_env=False,
    )
