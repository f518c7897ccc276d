"""The uevent monitor: ordering, filtering, cancellation, and a 10,000-event storm over REAL
netlink that overflows a small receive buffer.

How the storm works on Linux (checked on this Debian 12 VM, kernel 6.x, as root):

- Any process with CAP_NET_ADMIN may send to a NETLINK_KOBJECT_UEVENT multicast group:
  ``sender.sendto(datagram, (0, 2))`` (destination port id 0, group mask 2 = udev's group).
  The monitor binds ``(0, 2)``; receiving needs no privilege. We never send to group 1 (the
  kernel's), so nothing else on the machine is fooled.
- ``SO_RCVBUF``/``SO_RCVBUFFORCE`` of 4096 leaves 8192 bytes (Linux doubles the value); that
  holds about 9 small uevents, so nearly all of a 10,000-event burst is dropped.
- The kernel marks the socket with ENOBUFS on the first drop, and the next ``recv`` reports it
  *before* returning the datagrams still queued; ``SO_MEMINFO`` counts every drop exactly.
- Senders are root, so the monitor sees SCM_CREDENTIALS uid 0 and accepts them.

Each test uses its own random device-path prefix and ignores other paths, so two test runs on
the same machine (both sending to group 2) cannot disturb each other's assertions.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import secrets
import socket
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

from stas.actors.uevents import (
    NETLINK_KOBJECT_UEVENT,
    UDEV_GROUP,
    UeventMonitor,
    open_uevent_socket,
    read_drops,
    run_uevent_monitor,
    sender_trusted,
)
from stas.kernel.api import KernelController, KernelError, Uevent
from stas.kernel.uevent_codec import encode_kernel_uevent
from stas.messages import KernelResync


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    """Every async test here asks for it, so the hang guards in ``recv`` cost no real time."""
    return trio.testing.MockClock(autojump_threshold=0)


async def recv(receive: trio.MemoryReceiveChannel[Any]) -> Any:
    """The next message; a monitor that never sends fails the test instead of hanging it."""
    with trio.fail_after(60):  # jumps only once every task is blocked (autojump clock)
        return await receive.receive()


def prefix() -> str:
    return f"/devices/virtual/stas-test-{secrets.token_hex(4)}/"


def nvme_event(path: str, action: str, **env: str) -> bytes:
    return encode_kernel_uevent(action, path, {"SUBSYSTEM": "nvme", **env})


class FakeSock:
    """A datagram socketpair end that can be told to fail the next recv with ENOBUFS."""

    def __init__(self) -> None:
        self.rx, self.tx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.rx.setblocking(False)
        self.enobufs = False
        self.closed = False

    def fileno(self) -> int:
        return self.rx.fileno()

    def recvmsg(self, size: int, anc: int) -> tuple[bytes, list, int, Any]:
        if self.enobufs:
            self.enobufs = False
            raise OSError(errno.ENOBUFS, "No buffer space available")
        return self.rx.recvmsg(size, anc)

    def getsockopt(self, *args: int) -> bytes:
        raise OSError(errno.ENOPROTOOPT, "no SO_MEMINFO here")

    def __enter__(self) -> FakeSock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.closed = True
        self.rx.close()
        self.tx.close()


async def started(nursery: trio.Nursery, sock: Any, resync: Any, **kw: Any) -> tuple[Any, Any]:
    send, receive = trio.open_memory_channel[Any](1000)
    mon = UeventMonitor(send, resync, **kw)
    run = partial(run_uevent_monitor, resync=resync, sock_factory=lambda: sock, monitor=mon)
    await nursery.start(run, send)
    return mon, receive


async def no_controllers() -> list[KernelController]:
    return []


async def test_initial_resync_comes_first_then_events_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeSock()
    base = prefix()
    fake.tx.send(nvme_event(base + "nvme1", "add"))  # queued before the monitor even starts
    async with trio.open_nursery() as nursery:
        mon, receive = await started(nursery, fake, no_controllers)
        fake.tx.send(nvme_event(base + "nvme1", "change", NVME_AEN="0x70f002"))
        fake.tx.send(encode_kernel_uevent("add", base + "sda", {"SUBSYSTEM": "block"}))
        fake.tx.send(b"not a uevent at all")  # no SUBSYSTEM=nvme: skipped unparsed
        fake.tx.send(b"nonsense\0SUBSYSTEM=nvme\0")  # claims nvme: parsed, rejected
        fake.tx.send(nvme_event(base + "nvme1", "change", NVME_EVENT="rediscover"))
        msgs = [await recv(receive) for _ in range(4)]
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert msgs[0] == KernelResync(())
    assert [(m.action, m.device, m.aen, m.nvme_event) for m in msgs[1:]] == [
        ("add", "nvme1", None, None),
        ("change", "nvme1", 0x70F002, None),
        ("change", "nvme1", None, "rediscover"),
    ]
    assert mon.counters() == {
        "received": 6,
        "delivered": 3,
        "ignored": 2,
        "malformed": 1,
        "untrusted": 0,
        "overflows": 0,
        "lost": 0,
        "resyncs": 1,
    }
    assert fake.closed


async def test_enobufs_answered_after_draining_older_events(
    caplog, autojump_clock: trio.testing.MockClock
) -> None:
    caplog.set_level(logging.WARNING, logger="stas.uevents")
    fake = FakeSock()
    base = prefix()
    kernel = [KernelController(device="nvme7", transport="tcp")]

    async def resync() -> list[KernelController]:
        return list(kernel)

    async with trio.open_nursery() as nursery:
        mon, receive = await started(nursery, fake, resync)
        assert await recv(receive) == KernelResync(tuple(kernel))
        fake.enobufs = True  # the kernel reports the loss before the datagrams still queued
        fake.tx.send(nvme_event(base + "nvme5", "remove"))
        first, second = await recv(receive), await recv(receive)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert isinstance(first, Uevent) and (first.action, first.device) == ("remove", "nvme5")
    assert second == KernelResync(tuple(kernel))
    assert (mon.overflows, mon.dropped_bursts, mon.resyncs, mon.lost) == (1, 1, 2, 0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "uevent receive buffer overflowed; an unknown number of events lost; "
        "resynchronising from sysfs"
    ]


async def test_failed_resync_is_retried(caplog, autojump_clock: trio.testing.MockClock) -> None:
    caplog.set_level(logging.WARNING, logger="stas.uevents")
    calls = 0

    async def flaky() -> list[KernelController]:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise KernelError("sysfs went away", errno.EIO)
        return [KernelController(device="nvme0")]

    async with trio.open_nursery() as nursery:
        fake = FakeSock()
        start = trio.current_time()
        mon, receive = await started(nursery, fake, flaky)
        msg = await recv(receive)
        waited = trio.current_time() - start
        nursery.cancel_scope.cancel()
    assert msg == KernelResync((KernelController(device="nvme0"),))
    assert (calls, mon.resyncs, waited) == (3, 1, 3.0)  # 1 s, then 2 s
    assert [r.getMessage() for r in caplog.records] == [
        "reading controllers from sysfs failed (sysfs went away); retry in 1 s",
        "reading controllers from sysfs failed (sysfs went away); retry in 2 s",
    ]


def test_sender_trust() -> None:
    assert sender_trusted((0, 1), 0)  # the kernel on its own group
    assert not sender_trusted((4242, 1), 0)  # a process pretending to be the kernel
    assert sender_trusted((4242, 2), 0)  # udevd (root) on the udev group
    assert not sender_trusted((4242, 2), 1000)  # anyone not root
    assert sender_trusted(None, None)  # no address or credentials to judge by


async def test_cancellation_closes_the_real_socket(autojump_clock: trio.testing.MockClock) -> None:
    opened: list[socket.socket] = []

    def factory() -> socket.socket:
        opened.append(open_uevent_socket(groups=UDEV_GROUP, rcvbuf=1 << 16))
        return opened[0]

    send, _receive = trio.open_memory_channel[Any](10)
    async with trio.open_nursery() as nursery:
        run = partial(run_uevent_monitor, resync=no_controllers, sock_factory=factory)
        await nursery.start(run, send)
        assert opened[0].fileno() >= 0
        nursery.cancel_scope.cancel()
    assert opened[0].fileno() == -1


def test_open_uevent_socket_logs_the_size_obtained(caplog) -> None:
    caplog.set_level(logging.INFO, logger="stas.uevents")
    with open_uevent_socket(groups=UDEV_GROUP, rcvbuf=1 << 20) as sock:
        got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        assert sock.getsockname()[1] == UDEV_GROUP
        assert read_drops(sock) == 0
    assert got >= 1 << 20 if os.geteuid() == 0 else got > 0  # Linux doubles: 2 MiB as root
    assert f"receive buffer {got} bytes" in caplog.text


needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="sending to a netlink multicast group needs CAP_NET_ADMIN"
)


def netlink_sender() -> socket.socket:
    sender = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)
    sender.bind((0, 0))
    return sender


@needs_root
async def test_real_netlink_events_are_decoded_and_filtered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    base = prefix()
    with netlink_sender() as sender:
        async with trio.open_nursery() as nursery:
            sock = open_uevent_socket(groups=UDEV_GROUP, rcvbuf=1 << 20)
            mon, receive = await started(nursery, sock, no_controllers)
            assert await recv(receive) == KernelResync(())
            sender.sendto(nvme_event(base + "nvme3", "change", NVME_AEN="0x70f002"), (0, 2))
            sender.sendto(encode_kernel_uevent("add", base + "sdb", {"SUBSYSTEM": "block"}), (0, 2))
            sender.sendto(nvme_event(base + "nvme3", "change", NVME_EVENT="rediscover"), (0, 2))
            got: list[Uevent] = []
            while len(got) < 2:
                msg = await recv(receive)
                if isinstance(msg, Uevent) and msg.devpath.startswith(base):
                    got.append(msg)
            nursery.cancel_scope.cancel()
    assert [(e.device, e.aen, e.nvme_event) for e in got] == [
        ("nvme3", 0x70F002, None),
        ("nvme3", None, "rediscover"),
    ]
    assert mon.received >= 3 and mon.untrusted == 0
    assert sock.fileno() == -1


SOL_NETLINK, NETLINK_NO_ENOBUFS = 270, 5


@needs_root
@pytest.mark.parametrize("no_enobufs", [False, True], ids=["enobufs", "drop-counter-only"])
async def test_storm_overflow_is_detected_and_resynced(
    caplog, no_enobufs: bool, autojump_clock: trio.testing.MockClock
) -> None:
    """10,000 uevents at once into 8 KiB; with NETLINK_NO_ENOBUFS the kernel stays silent and
    only the SO_MEMINFO drop counter reveals the loss, which must be enough."""
    caplog.set_level(logging.WARNING, logger="stas.uevents")
    base = prefix()
    kernel: dict[str, KernelController] = {}  # what the "kernel" has after each event

    async def resync() -> list[KernelController]:
        return list(kernel.values())

    seen: set[str] = set()  # the consumer's reconstruction
    resyncs_seen = 0
    order: list[str] = []

    def apply(msg: object) -> None:
        nonlocal seen, resyncs_seen
        if isinstance(msg, KernelResync):
            resyncs_seen += 1
            order.append("resync")
            seen = {c.device for c in msg.controllers}
        elif isinstance(msg, Uevent) and msg.devpath.startswith(base):
            order.append("event")
            if msg.action == "remove":
                seen.discard(msg.device)
            elif msg.action == "add":
                seen.add(msg.device)

    sock = open_uevent_socket(groups=UDEV_GROUP, rcvbuf=4096)
    rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if no_enobufs:
        sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
    with netlink_sender() as sender:
        async with trio.open_nursery() as nursery:
            mon, receive = await started(nursery, sock, resync)
            rng = random.Random(380)
            for i in range(10_000):  # no checkpoint: the monitor cannot read meanwhile
                dev = f"nvme{rng.randrange(100)}"
                action = rng.choice(("add", "change", "remove"))
                if action == "add":
                    kernel[dev] = KernelController(device=dev, transport="tcp")
                elif action == "remove":
                    kernel.pop(dev, None)
                env = {"NVME_AEN": "0x70f002"} if action == "change" else {}
                sender.sendto(nvme_event(base + dev, action, SEQNUM=str(i), **env), (0, 2))
            while resyncs_seen < 2:  # the initial one, then the one answering the overflow
                apply(await recv(receive))
            await trio.testing.wait_all_tasks_blocked()
            while True:
                try:
                    apply(receive.receive_nowait())
                except trio.WouldBlock:
                    break
            nursery.cancel_scope.cancel()
    assert rcvbuf == 8192  # 4096 doubled: small enough to overflow at once
    assert order[0] == "resync"  # the initial scan comes before any event
    assert mon.overflows >= 1 and mon.resyncs == 1 + mon.overflows
    assert 0 < mon.delivered < 10_000  # events really were lost...
    assert mon.received + mon.lost >= 10_000  # ...and SO_MEMINFO accounted for every one
    assert 0 < len(kernel) < 100  # a mix: some removes at the end were lost, some adds too
    assert seen == set(kernel), "after the resync the consumer's view equals the kernel's"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == mon.overflows  # once per burst, not once per lost event
    assert warnings[0].startswith("uevent receive buffer overflowed; ")
    assert warnings[0].endswith(" events lost; resynchronising from sysfs")
    assert sock.fileno() == -1
