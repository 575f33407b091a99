"""Which addresses a callback may go to: globally routable ones only.

`ipaddress`'s `is_global` is the base; on its own it lets through IPv6 forms that carry an IPv4 address
the host would reach (or a relay/translator would): IPv4-compatible `::a.b.c.d`, 6to4 `2002::/16`,
NAT64 `64:ff9b::/96`, and (depending on the Python version) IPv4-mapped `::ffff:a.b.c.d`; and it counts
multicast as global. So embedded IPv4 addresses are unwrapped and judged themselves, and multicast,
reserved, local-use NAT64 (`64:ff9b:1::/48`) and Teredo (`2001::/32`) are refused outright.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, IPv6Network, ip_address

NAT64_WELL_KNOWN = IPv6Network("64:ff9b::/96")
NAT64_LOCAL_USE = IPv6Network("64:ff9b:1::/48")
IPV4_COMPATIBLE = IPv6Network("::/96")
TEREDO = IPv6Network("2001::/32")


def embedded_ipv4(address: IPv6Address) -> tuple[str, IPv4Address] | None:
    """The IPv4 address an IPv6 address carries by a known translation, with the translation's name."""
    if address.ipv4_mapped is not None:
        return "IPv4-mapped", address.ipv4_mapped
    if address in NAT64_WELL_KNOWN:
        return "NAT64", IPv4Address(address.packed[12:])
    if address in IPV4_COMPATIBLE:
        return "IPv4-compatible", IPv4Address(address.packed[12:])
    if address.sixtofour is not None:
        return "6to4", address.sixtofour
    return None


def refusal(text: str) -> str | None:
    """None if a callback may connect to the address `text`, else why not."""
    address = ip_address(text.split("%", 1)[0])  # an IPv6 zone (fe80::1%eth0) does not change the verdict
    if isinstance(address, IPv6Address):
        embedded = embedded_ipv4(address)
        if embedded is not None:
            form, inner = embedded
            why = refusal(str(inner))
            return f"{address} is {form} for {inner}: {why}" if why else None
        if address in NAT64_LOCAL_USE:
            return f"{address} is a local-use NAT64 address"
        if address in TEREDO:
            return f"{address} is a Teredo address"
    if address.is_multicast:
        return f"{address} is a multicast address"
    if not address.is_global or address.is_reserved or address.is_unspecified:
        return f"{address} is not a globally routable address"
    return None
