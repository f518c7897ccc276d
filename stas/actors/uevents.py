"""The uevent monitor: kernel NVMe events over netlink, and a full resync when any are lost.

Upstream (pyudev) lost ``remove`` events under bursts and never noticed (issues #261, #380).
Here the receive buffer is large (128 MiB when CAP_NET_ADMIN allows ``SO_RCVBUFFORCE``), and
when the kernel still drops events it says so: the next receive fails with ENOBUFS, and the
socket's drop counter (``SO_MEMINFO``) grows. The monitor then drains what is queued (older
than the loss), re-reads every controller from sysfs and sends ``KernelResync``, so every
consumer can compare its view with the kernel's and act on the differences: a missed
``remove`` shows as a controller that is gone, a missed AEN is covered by consumers refetching.

Messages sent (the contract the connector and the DC actors already use):
``stas.kernel.api.Uevent`` for each event of ``subsystem``, and ``stas.messages.KernelResync``
once at start (after the socket is bound, so nothing between scan and subscription is lost)
and after every overflow burst. Events are sent in kernel order; applying them in order on
top of the latest resync yields the kernel's state, because add/remove are idempotent per
device and any event read after a resync happened no earlier than the events before it.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from stas.backoff import doubling
from stas.kernel.api import KernelController, KernelError, Uevent
from stas.kernel.uevent_codec import MAX_DATAGRAM, decode_for_subsystem
from stas.messages import KernelResync
from stas.nvme.errors import ProtocolError

log = logging.getLogger("stas.uevents")

NETLINK_KOBJECT_UEVENT = 15
KERNEL_GROUP = 1  # raw kernel uevents
UDEV_GROUP = 2  # udevd's re-broadcast after rule processing
RCVBUF = 128 * 1024 * 1024
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Python has no name for it
SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)
SK_MEMINFO_DROPS = 8  # index in the SO_MEMINFO u32 array
_UCRED = struct.Struct("=iII")  # pid, uid, gid
_CMSG_SPACE = socket.CMSG_SPACE(_UCRED.size)
YIELD_EVERY = 64  # datagrams drained between checkpoints, so a storm cannot starve other tasks
RESYNC_RETRY = (1.0, 30.0)  # first and largest delay when reading sysfs fails

Resync = Callable[[], Awaitable[Sequence[KernelController]]]


def open_uevent_socket(*, groups: int = KERNEL_GROUP, rcvbuf: int = RCVBUF) -> socket.socket:
    """A non-blocking NETLINK_KOBJECT_UEVENT socket bound to ``groups``, buffer as big as allowed.

    ``SO_RCVBUFFORCE`` (needs CAP_NET_ADMIN) ignores ``net.core.rmem_max``; without it the
    sysctl caps ``SO_RCVBUF``. Linux doubles the requested value for bookkeeping, so the size
    logged is what the kernel reports back.
    """
    sock = socket.socket(
        socket.AF_NETLINK,
        socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
        NETLINK_KOBJECT_UEVENT,
    )
    try:
        how = "SO_RCVBUFFORCE"
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except PermissionError:
            how = "SO_RCVBUF (no CAP_NET_ADMIN: capped by net.core.rmem_max)"
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.bind((0, groups))
    except BaseException:
        sock.close()
        raise
    got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    log.info("uevent socket (group %d): receive buffer %d bytes via %s", groups, got, how)
    return sock


def sender_trusted(address: Any, uid: int | None) -> bool:
    """Only root may speak uevents; on the kernel group only the kernel itself (port id 0).

    A process with CAP_NET_ADMIN in our network namespace could otherwise forge a ``remove``.
    """
    if uid is not None and uid != 0:
        return False
    if isinstance(address, tuple) and len(address) == 2:
        portid, group = address
        if group == KERNEL_GROUP and portid != 0:
            return False
    return True


def read_drops(sock: socket.socket) -> int | None:
    """Datagrams the kernel dropped for this socket so far (None where it does not say)."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4 * (SK_MEMINFO_DROPS + 1))
    except OSError:
        return None
    if len(raw) < 4 * (SK_MEMINFO_DROPS + 1):
        return None
    return int(struct.unpack_from("=I", raw, 4 * SK_MEMINFO_DROPS)[0])


def _credentials_uid(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancdata:
        ours = level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
        if ours and len(data) >= _UCRED.size:
            return int(_UCRED.unpack_from(data)[1])
    return None


class UeventMonitor:
    """One socket's reader. Counters are public for diagnostics (process_info) and tests."""

    def __init__(
        self,
        send: trio.MemorySendChannel[Uevent | KernelResync],
        resync: Resync,
        *,
        subsystem: str = "nvme",
    ) -> None:
        self.send = send
        self.resync = resync
        self.subsystem = subsystem
        self.received = 0  # datagrams read, any subsystem
        self.delivered = 0  # events of ``subsystem`` sent on
        self.ignored = 0  # other subsystems
        self.malformed = 0
        self.untrusted = 0
        self.overflows = 0  # bursts of lost events (each answered by one resync)
        self.lost = 0  # events the kernel dropped, from SO_MEMINFO (0 where unknown)
        self.resyncs = 0
        self._drops_seen: int | None = None

    @property
    def dropped_bursts(self) -> int:
        return self.overflows

    def counters(self) -> dict[str, int]:
        """Diagnostics as a plain dict (the D-Bus ``process_info`` shape)."""
        names = (
            *("received", "delivered", "ignored", "malformed", "untrusted"),
            *("overflows", "lost", "resyncs"),
        )
        return {name: getattr(self, name) for name in names}

    async def _resync(self) -> None:
        for delay in doubling(*RESYNC_RETRY):
            try:
                controllers = tuple(await self.resync())
                break
            except (OSError, KernelError) as exc:
                log.warning("reading controllers from sysfs failed (%s); retry in %g s", exc, delay)
                await trio.sleep(delay)
        self.resyncs += 1
        log.debug("resynchronised: %d controllers in sysfs", len(controllers))
        await self.send.send(KernelResync(controllers))

    def _new_drops(self, sock: socket.socket) -> int | None:
        """Drops since last asked; None when the socket does not report them."""
        drops = read_drops(sock)
        if drops is None:
            return None
        new = (drops - (self._drops_seen or 0)) % 2**32  # the kernel's counter is a u32
        self._drops_seen = drops
        return new

    async def _handle(self, data: bytes, flags: int, address: Any, uid: int | None) -> None:
        self.received += 1
        if not sender_trusted(address, uid):
            self.untrusted += 1
            log.debug("ignoring uevent from untrusted sender %r (uid %s)", address, uid)
            return
        if flags & socket.MSG_TRUNC:
            self.malformed += 1
            log.debug("ignoring uevent larger than %d bytes", MAX_DATAGRAM)
            return
        try:
            event = decode_for_subsystem(data, self.subsystem)
        except ProtocolError as exc:
            self.malformed += 1
            log.debug("ignoring malformed uevent: %s", exc)
            return
        if event is None:
            self.ignored += 1
            return
        self.delivered += 1
        await self.send.send(event)

    async def _drain(self, sock: socket.socket) -> bool:
        """Read until EAGAIN; True if the kernel said events were lost (ENOBUFS)."""
        lost = False
        count = 0
        while True:
            try:
                data, ancdata, flags, address = sock.recvmsg(MAX_DATAGRAM, _CMSG_SPACE)
            except BlockingIOError:
                return lost
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                lost = True  # queued datagrams are older than the loss: keep draining
                continue
            await self._handle(data, flags, address, _credentials_uid(ancdata))
            count += 1
            if count % YIELD_EVERY == 0:
                await trio.lowlevel.checkpoint()

    async def serve(self, sock: socket.socket, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Send the initial resync, then events and resyncs forever (no timers, no polling)."""
        self._new_drops(sock)  # baseline
        task_status.started()
        await self._resync()  # after bind: nothing between the scan and the subscription is lost
        while True:
            await trio.lowlevel.wait_readable(sock)
            enobufs = await self._drain(sock)
            dropped = self._new_drops(sock)
            if not enobufs and not dropped:
                continue
            self.overflows += 1
            self.lost += dropped or 0
            count = f"{dropped} events" if dropped else "an unknown number of events"
            log.warning(
                "uevent receive buffer overflowed; %s lost; resynchronising from sysfs", count
            )
            await self._resync()


async def run_uevent_monitor(
    send: trio.MemorySendChannel[Uevent | KernelResync],
    *,
    resync: Resync,
    sock_factory: Callable[[], socket.socket] = open_uevent_socket,
    subsystem: str = "nvme",
    monitor: UeventMonitor | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Open the socket, then serve until cancelled; the socket is closed however this ends.

    Pass ``monitor`` to keep a handle on its counters; otherwise one is made here.
    """
    mon = monitor if monitor is not None else UeventMonitor(send, resync, subsystem=subsystem)
    sock = sock_factory()
    with sock:
        await mon.serve(sock, task_status)
