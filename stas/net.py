"""IP addresses and TCP connects, with one rule for each question the daemons ask.

Which family is this traddr? Is it usable under ``ip-family``? How do logs name a target? How
is a socket tied to ``host-iface``? Each used to be answered in several places with slightly
different rules (``":" in traddr`` in one, ``ipaddress`` with or without the ``%zone`` in
others); these are the answers everyone shares. Only the standard library here; Trio is
imported by the one coroutine that needs it, so config checks and stasadm can share the rules
without loading Trio.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import trio

log = logging.getLogger("stas.net")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(text: str) -> IPAddress | None:
    """The IP literal ``text`` names (a ``%zone`` suffix ignored), or None if it is none."""
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def host_ip(text: str) -> IPAddress | None:
    """The address ``text`` names, for classifying and comparing: a ``%zone`` suffix ignored,
    IPv4-mapped IPv6 read as the IPv4 address; None if it is no IP literal."""
    ip = parse_ip(text)
    return None if ip is None else _unmapped(ip)


def _unmapped(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def ip_version(text: str) -> int | None:
    """4 or 6 for the literal as written (``::ffff:1.2.3.4`` is 6: what the kernel is given);
    None for anything that is not an IP literal (a host name)."""
    ip = parse_ip(text)
    return None if ip is None else ip.version


def normalise_ip(text: str) -> tuple[int, str] | None:
    """(family, canonical text) of an IP literal, for comparing addresses: IPv4-mapped IPv6
    becomes IPv4. A ``%zone`` is kept as part of the address (Python parses it)."""
    try:
        ip = _unmapped(ipaddress.ip_address(text))
    except ValueError:
        return None
    return ip.version, str(ip)


def usable_address(traddr: str, ip_family: Sequence[int]) -> bool:
    """An address a host may connect to under ``ip-family``: an IP literal of an allowed family
    (IPv4-mapped counts as IPv4), not the unspecified 0.0.0.0 / ::."""
    norm = normalise_ip(traddr)
    return norm is not None and norm[0] in ip_family and norm[1] not in ("0.0.0.0", "::")


def endpoint(traddr: str, trsvcid: int | str, iface: str = "") -> str:
    """``1.2.3.4:8009``, ``[fe80::1]:8009 on eth0``: how logs name a target."""
    host = f"[{traddr}]" if ":" in traddr else traddr
    return f"{host}:{trsvcid}" + (f" on {iface}" if iface else "")


def sockaddr(traddr: str, port: int, iface: str = "") -> tuple[int, tuple[str | int, ...]]:
    """(family, address) for connect(); an IPv6 link-local address is scoped to ``iface``."""
    ip = ipaddress.ip_address(traddr)
    if ip.version == 4:
        return socket.AF_INET, (traddr, port)
    scope = socket.if_nametoindex(iface) if iface and ip.is_link_local else 0
    return socket.AF_INET6, (traddr, port, 0, scope)


def bind_to_device(sock: trio.socket.SocketType, iface: str) -> bool:
    """SO_BINDTODEVICE ``iface``; False (and the routing table decides) without CAP_NET_RAW.
    Other errors (no such interface) raise OSError."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EACCES):
            raise
        log.debug("SO_BINDTODEVICE(%s) not permitted; connecting unbound", iface)
        return False
    return True


async def tcp_connect(traddr: str, port: int, iface: str) -> None:
    """One TCP connect (closed again at once), bound to ``iface`` when we are allowed to."""
    import trio

    family, addr = sockaddr(traddr, port, iface)
    with trio.socket.socket(family, socket.SOCK_STREAM) as sock:
        if iface:
            bind_to_device(sock, iface)
        await sock.connect(addr)
