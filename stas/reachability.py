"""Is a discovery controller reachable, and through which local interface?

mDNS announcements can arrive before the announced controller listens (upstream NEWS 2.3:
"Connection refused" from CDCs advertising early), and a spoofed announcement may point nowhere.
So a candidate is reported only after one TCP connect succeeds (``wait_reachable``). Every wait
is a Trio sleep, so tests drive the ladder with ``MockClock``. ``local_interfaces_for`` names the
interface a peer is directly reachable through, for ``host-iface``.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence

import trio

from stas.net import endpoint, host_ip, tcp_connect

__all__ = ["endpoint", "local_interfaces_for", "tcp_connect", "wait_reachable"]

log = logging.getLogger("stas.reachability")

DEFAULT_BACKOFF: tuple[float, ...] = (2, 5, 10, 30, 60, 300, 600)

# connect(traddr, port, iface) returns once a connection was made (and closed again) and
# raises OSError when it could not be made.
ConnectFn = Callable[[str, int, str], Awaitable[None]]


async def wait_reachable(
    traddr: str,
    trsvcid: int | str,
    *,
    iface: str = "",
    backoff: Sequence[float] = DEFAULT_BACKOFF,
    connect_timeout: float = 3.0,
    connect: ConnectFn | None = None,
) -> None:
    """Return once a TCP connect to ``traddr:trsvcid`` succeeds; retry forever until then.

    After failure ``n`` the wait is ``backoff[n-1]``, and the last value is the ceiling.
    """
    if not backoff:
        raise ValueError("backoff ladder must not be empty")
    do_connect = connect or tcp_connect
    port = int(trsvcid)
    where = endpoint(traddr, trsvcid, iface)
    failures = 0
    while True:
        try:
            with trio.fail_after(connect_timeout):
                await do_connect(traddr, port, iface)
        except (OSError, trio.TooSlowError) as exc:
            reason = "timed out" if isinstance(exc, trio.TooSlowError) else str(exc)
            delay = backoff[min(failures, len(backoff) - 1)]
            failures += 1
            if failures == 1:
                log.info(
                    "Unable to verify TCP connectivity to %s: %s; retrying in %g s",
                    where,
                    reason,
                    delay,
                )
            else:
                log.debug(
                    "%s still unreachable (%s); retry %d in %g s", where, reason, failures, delay
                )
            await trio.sleep(delay)
            continue
        if failures:
            log.info("TCP connectivity to %s verified after %d failed attempts", where, failures)
        return


# --- which local interface reaches a peer ------------------------------------------------------
# zeroconf does not say which interface an answer arrived on (except as the scope of an IPv6
# link-local address), so the interface is the one whose own address shares the longest prefix
# with the peer. Limits, by design: a peer behind a router matches no interface (host-iface is
# then empty and the routing table decides); IPv4 sees each interface's primary address only.

SIOCGIFADDR = 0x8915
SIOCGIFNETMASK = 0x891B
IfNet = tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]


def parse_if_inet6(text: str) -> list[IfNet]:
    """Interfaces and IPv6 prefixes from ``/proc/net/if_inet6`` text; bad lines are skipped."""
    out: list[IfNet] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 6 or len(fields[0]) != 32:
            continue
        try:
            addr = ipaddress.IPv6Address(bytes.fromhex(fields[0]))
            out.append((fields[5], ipaddress.IPv6Network(f"{addr}/{int(fields[2], 16)}", False)))
        except ValueError:
            continue
    return out


def _ipv4_networks() -> list[IfNet]:
    import fcntl  # Linux-only; imported here so the module still loads for pure helpers
    import struct

    out: list[IfNet] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            ifreq = struct.pack("16s24x", name.encode()[:15])
            try:
                addr = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, ifreq)[20:24]
                mask = fcntl.ioctl(sock.fileno(), SIOCGIFNETMASK, ifreq)[20:24]
            except OSError:
                continue  # no IPv4 address on this interface
            net = f"{socket.inet_ntoa(addr)}/{socket.inet_ntoa(mask)}"
            out.append((name, ipaddress.IPv4Network(net, strict=False)))
    return out


def _ipv6_networks() -> list[IfNet]:
    try:
        with open("/proc/net/if_inet6", encoding="ascii") as f:
            return parse_if_inet6(f.read())
    except OSError:
        return []  # IPv6 disabled


def best_interfaces(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, nets: list[IfNet]
) -> list[str]:
    """Interfaces holding the longest prefix that contains ``ip`` (more than one: misconfig)."""
    hits = [(net.prefixlen, name) for name, net in nets if net.version == ip.version and ip in net]
    if not hits:
        return []
    best = max(length for length, _ in hits)
    return sorted({name for length, name in hits if length == best})


def local_interfaces_for(address: str) -> list[str]:
    """Local interfaces through which ``address`` (maybe ``fe80::1%2``) is directly reachable."""
    addr, _, scope = address.partition("%")
    ip = host_ip(addr)
    if ip is None:
        raise ValueError(f"{addr!r} is not an IP address")
    if scope:
        try:
            return [socket.if_indextoname(int(scope)) if scope.isdigit() else scope]
        except OSError:
            return []
    if ip.version == 6 and ip.is_link_local:
        return []  # every interface has fe80::/64: without the scope we cannot tell
    names = best_interfaces(ip, _ipv4_networks() if ip.version == 4 else _ipv6_networks())
    if not names and ip.is_loopback:
        return ["lo"]
    return names
