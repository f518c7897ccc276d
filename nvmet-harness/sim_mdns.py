"""Announce the simulator's TCP discovery ports over mDNS/DNS-SD (TP8009).

The real nvmet has no mDNS responder, so upstream could never test mDNS discovery on one
machine; the simulator announces ``_nvme-disc._tcp.local.`` for each of its TCP ports so
stafd's mDNS browser has something real to find.

How mDNS works over loopback on this machine (Debian 12, ``lo`` has no MULTICAST flag),
found by experiment with python-zeroconf 0.154:

- ``Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)`` works: Linux lets a
  socket join 224.0.0.251 on ``lo`` (``ip maddr show dev lo`` then lists it) and multicast
  loopback delivers the packets, both to a browser in the same process and to one in
  another process bound the same way. Nothing leaves the machine.
- ``interfaces=["::1"]`` (IPv6 only) does not work: IPv6 multicast needs the MULTICAST
  flag, so a browser never sees the service.
- The default (all interfaces) also works but announces on eth0 too; we avoid it.
- The service's A/AAAA records can still carry ``::1``: only the transport is IPv4.
- ``register_service`` blocks about 1.7 s (probing + announcements), so it runs in a
  worker thread; ``unregister_service`` sends the goodbye (TTL 0) before ``close()``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import attrs
import trio
from zeroconf import IPVersion, ServiceInfo, Zeroconf

SERVICE_TYPE = "_nvme-disc._tcp.local."
WELL_KNOWN_DISCOVERY_NQN = "nqn.2014-08.org.nvmexpress.discovery"
LOOPBACK_INTERFACES = ("127.0.0.1",)


@attrs.frozen
class Announcement:
    """One TCP discovery port to announce: id (for the instance name), address, port."""

    port_id: int
    traddr: str
    trsvcid: int
    nqn: str = WELL_KNOWN_DISCOVERY_NQN


def _addresses(traddr: str) -> list[bytes]:
    """Packed A/AAAA addresses for traddr; wildcards advertise the loopback addresses."""
    ip = ipaddress.ip_address(traddr.split("%", 1)[0])
    if ip.is_unspecified:
        return [
            socket.inet_pton(socket.AF_INET, "127.0.0.1"),
            socket.inet_pton(socket.AF_INET6, "::1"),
        ]
    return [ip.packed]


def service_info(ann: Announcement, *, host_label: str) -> ServiceInfo:
    """The DNS-SD records for one announcement (SRV port, TXT p=tcp and nqn=...)."""
    return ServiceInfo(
        SERVICE_TYPE,
        f"nvmet-sim-{ann.port_id}.{SERVICE_TYPE}",
        port=ann.trsvcid,
        properties={"p": "tcp", "nqn": ann.nqn},
        server=f"{host_label}.local.",
        addresses=_addresses(ann.traddr),
    )


def _register_all(
    announcements: Sequence[Announcement], interfaces: Sequence[str]
) -> tuple[Zeroconf, list[ServiceInfo]]:
    zc = Zeroconf(interfaces=list(interfaces), ip_version=IPVersion.V4Only)
    infos: list[ServiceInfo] = []
    try:
        host_label = f"nvmet-sim-{os.getpid()}"
        for ann in announcements:
            info = service_info(ann, host_label=host_label)
            zc.register_service(info, allow_name_change=True)
            infos.append(info)
    except BaseException:
        _unregister_all(zc, infos)
        raise
    return zc, infos


def _unregister_all(zc: Zeroconf, infos: Sequence[ServiceInfo]) -> None:
    try:
        for info in infos:
            zc.unregister_service(info)
    finally:
        zc.close()


@asynccontextmanager
async def announce(
    announcements: Sequence[Announcement],
    *,
    interfaces: Sequence[str] = LOOPBACK_INTERFACES,
) -> AsyncIterator[list[ServiceInfo]]:
    """Announce every port while the block runs; send goodbyes on the way out."""
    zc, infos = await trio.to_thread.run_sync(_register_all, announcements, interfaces)
    try:
        yield infos
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_unregister_all, zc, infos)
