"""Resolve a ``traddr`` (IP literal or host name) to the addresses ``ip-family`` allows.

A host name may map to several addresses; callers try each in turn until one answers. The
name ``localhost`` (and ``*.localhost``, RFC 6761) always means the loopback addresses of the
allowed families, even when /etc/hosts lacks ``::1 localhost``: the seed's nvmet listens on
``::1`` only and its stafd.conf says ``traddr=localhost``.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from stas.net import normalise_ip, tcp_connect

__all__ = ["first_answering", "normalise_ip", "resolve_traddr", "tcp_probe"]

log = logging.getLogger("stas.resolve")

Resolver = Callable[[str], Awaitable[Sequence[str]]]
Probe = Callable[[str, int, str], Awaitable[Any]]  # (address, port, iface); OSError: no answer
LOOPBACK = {4: "127.0.0.1", 6: "::1"}
RESOLVE_TIMEOUT = 10.0
PROBE_TIMEOUT = 2.0


async def _getaddrinfo(name: str) -> Sequence[str]:
    # bytes: a str host is encoded with the "idna" codec, ~0.8 MB of RSS to import. The same
    # line is in stas.nvme.host_ops._resolve on purpose: stas/nvme imports nothing outside it
    # (stas.constants), and importing host_ops here would load the userspace codec into
    # every stafd at start-up (dc_backend loads it on first use).
    host = name.encode("ascii") if name.isascii() else name
    infos = await trio.socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _family_order(ip_family: Sequence[int]) -> list[int]:
    # upstream prefers IPv4 whichever order ip-family names (ipv6+ipv4 maps to (4, 6) too)
    return [f for f in (4, 6) if f in ip_family]


async def resolve_traddr(
    traddr: str,
    *,
    ip_family: Sequence[int] = (4, 6),
    resolver: Resolver | None = None,
    warned: set[str] | None = None,
) -> list[str]:
    """Allowed addresses for ``traddr``, in preference order, without duplicates."""
    literal = normalise_ip(traddr)
    if literal is not None:
        family, text = literal
        return [text] if family in ip_family else []
    name = traddr.strip().rstrip(".").lower()
    if not name:
        return []
    if name == "localhost" or name.endswith(".localhost"):
        return [LOOPBACK[f] for f in _family_order(ip_family)]
    try:
        with trio.fail_after(RESOLVE_TIMEOUT):
            found = await (resolver or _getaddrinfo)(traddr.strip())
    except (OSError, ValueError, trio.TooSlowError) as exc:  # ValueError: IDNA-invalid name
        if warned is None or traddr not in warned:
            log.warning("cannot resolve %r: %s", traddr, exc or "timed out")
            if warned is not None:
                warned.add(traddr)
        return []
    by_family: dict[int, list[str]] = {4: [], 6: []}
    for addr in found:
        norm = normalise_ip(addr.split("%", 1)[0])
        if norm and norm[0] in ip_family and norm[1] not in by_family[norm[0]]:
            by_family[norm[0]].append(norm[1])
    return [a for f in _family_order(ip_family) for a in by_family[f]]


async def tcp_probe(traddr: str, port: int, iface: str) -> None:
    """One bounded TCP connect: does ``traddr`` answer on ``port``?"""
    with trio.fail_after(PROBE_TIMEOUT):
        await tcp_connect(traddr, port, iface)


async def first_answering(
    addresses: Sequence[str], port: int, iface: str, probe: Probe = tcp_probe
) -> str | None:
    """The first of ``addresses`` that accepts a connection, in order; None if none does."""
    for addr in addresses:
        try:
            await probe(addr, port, iface)
        except (OSError, trio.TooSlowError):
            continue
        return addr
    return None
