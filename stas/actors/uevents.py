"""The uevent monitor: kernel NVMe events over netlink, and a full resync when any are lost.

Upstream (pyudev) lost remove events under bursts and never noticed (issues #261, #380). Here
the receive buffer is large (128 MiB with CAP_NET_ADMIN), and when the kernel still drops
events it says so with ENOBUFS on the next receive: the monitor then re-reads every controller
from sysfs and sends ``KernelResync``, so consumers converge on the kernel's real state.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from stas.kernel.api import KernelController
from stas.kernel.uevent_codec import decode_uevent
from stas.messages import KernelResync
from stas.nvme.errors import ProtocolError

log = logging.getLogger("stas.uevents")

NETLINK_KOBJECT_UEVENT = 15
KERNEL_GROUP = 1
RCVBUF = 128 * 1024 * 1024
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def open_uevent_socket(*, groups: int = KERNEL_GROUP, rcvbuf: int = RCVBUF) -> socket.socket:
    sock = socket.socket(
        socket.AF_NETLINK,
        socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
        NETLINK_KOBJECT_UEVENT,
    )
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
    except OSError:  # not privileged: the sysctl limit applies
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((0, groups))
    log.debug(
        "uevent socket receive buffer: %d bytes",
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
    )
    return sock


class UeventMonitor:
    """Counters are public for diagnostics (process_info) and tests."""

    def __init__(
        self,
        send: trio.MemorySendChannel[Any],
        resync: Callable[[], Awaitable[Sequence[KernelController]]],
        *,
        subsystem: str = "nvme",
    ) -> None:
        self.send = send
        self.resync = resync
        self.subsystem = subsystem
        self.received = 0
        self.overflows = 0
        self.resyncs = 0
        self.malformed = 0

    async def _resync(self) -> None:
        self.resyncs += 1
        controllers = tuple(await self.resync())
        await self.send.send(KernelResync(controllers))

    async def serve(self, sock: socket.socket, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await self._resync()  # after bind: nothing between the scan and the subscription is lost
        task_status.started()
        while True:
            await trio.lowlevel.wait_readable(sock)
            lost = False
            while True:  # drain everything queued, then wait again (no timers, no polling)
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno != errno.ENOBUFS:
                        raise
                    lost = True
                    continue
                self.received += 1
                try:
                    event = decode_uevent(data)
                except ProtocolError as exc:
                    self.malformed += 1
                    log.debug("ignoring malformed uevent: %s", exc)
                    continue
                if event.subsystem == self.subsystem:
                    await self.send.send(event)
            if lost:
                self.overflows += 1
                log.warning(
                    "uevent receive buffer overflowed: events were lost; resynchronising from sysfs"
                )
                await self._resync()


async def run_uevent_monitor(
    send: trio.MemorySendChannel[Any],
    *,
    resync: Callable[[], Awaitable[Sequence[KernelController]]],
    sock_factory: Callable[[], socket.socket] = open_uevent_socket,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    sock = sock_factory()
    with sock:
        await UeventMonitor(send, resync).serve(sock, task_status)
