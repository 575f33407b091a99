"""Namespaces: every user's functions live in their own namespace, so names are unique per user.

A function's key (its name in the store, the engine, records and metrics) is `<user>.<name>`, or just
`<name>` for the built-in admin's functions. A name in a request means the caller's own function
unless it is qualified: `hello` from alice's key is `alice.hello`; the admin reaches it as `alice.hello`.
Function names never contain a dot, so a key splits one way only.

HTTP trigger routes are global paths (under /fn) claimed per namespace: a user's routes are `/<user>`
or lie under `/<user>/` (default `/<user>/<name>`), and the admin's routes lie outside every user's.
"""

from __future__ import annotations

ADMIN = "admin"  # the built-in administrator: its functions' keys are their bare names
SEPARATOR = "."


def function_key(namespace: str, name: str) -> str:
    return name if namespace == ADMIN else f"{namespace}{SEPARATOR}{name}"


def split_key(key: str) -> tuple[str, str]:
    """(namespace, name) of a function key."""
    namespace, dot, name = key.partition(SEPARATOR)
    return (namespace, name) if dot else (ADMIN, key)


def resolve(user: str, name: str) -> str:
    """The key a function name in a request from `user` refers to."""
    return name if SEPARATOR in name else function_key(user, name)


def route_prefix(namespace: str) -> str | None:
    """The path every route of this namespace lies under (None: the admin's, anywhere else)."""
    return None if namespace == ADMIN else f"/{namespace}/"


def in_prefix(route: str, prefix: str) -> bool:
    return route == prefix.rstrip("/") or route.startswith(prefix)


def default_route(key: str) -> str:
    namespace, name = split_key(key)
    return f"/{name}" if namespace == ADMIN else f"/{namespace}/{name}"


def route_namespace(route: str) -> str:
    """The first segment of a route: the namespace that would own it if it is a user's."""
    return route.lstrip("/").split("/", 1)[0]
