"""Uevent monitor: decoding, and a 10,000-event storm over REAL netlink that overflows a small
receive buffer. As root a process may send to the udev multicast group (2) of
NETLINK_KOBJECT_UEVENT with ``sendto(data, (0, 2))``; the monitor, bound to that group with a
4 KiB buffer, gets ENOBUFS on its next receive, exactly as when the kernel floods it."""

from __future__ import annotations

import contextlib
import logging
import os
import socket

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from stas.actors.uevents import UeventMonitor, open_uevent_socket
from stas.kernel.api import KernelController, Uevent
from stas.kernel.uevent_codec import decode_uevent, encode_kernel_uevent
from stas.messages import KernelResync
from stas.nvme.errors import ProtocolError

DEVPATH = "/devices/virtual/nvme-fabrics/ctl/"


def test_decode_real_looking_events() -> None:
    raw = encode_kernel_uevent(
        "change",
        DEVPATH + "nvme3",
        {"SUBSYSTEM": "nvme", "NVME_AEN": "0x70f002", "NVME_TRTYPE": "tcp"},
    )
    ev = decode_uevent(raw)
    assert (ev.action, ev.device, ev.subsystem, ev.aen) == ("change", "nvme3", "nvme", 0x70F002)
    ev = decode_uevent(
        encode_kernel_uevent(
            "change", DEVPATH + "nvme0", {"SUBSYSTEM": "nvme", "NVME_EVENT": "rediscover"}
        )
    )
    assert ev.nvme_event == "rediscover" and ev.aen is None
    with pytest.raises(ProtocolError, match="libudev"):
        decode_uevent(b"libudev\0\xfe\xed")
    with pytest.raises(ProtocolError, match="ACTION@DEVPATH"):
        decode_uevent(b"garbage\0A=B\0")


@given(st.binary(max_size=300))
def test_decoder_never_crashes(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        assert isinstance(decode_uevent(data), Uevent)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="sending to a netlink group needs root")


@needs_root
async def test_storm_overflow_is_detected_and_resynced(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="stas.uevents")
    sock = open_uevent_socket(groups=2, rcvbuf=4096)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # keep it small on purpose
    kernel: dict[str, KernelController] = {}  # the "kernel" state the storm produces

    async def resync() -> list[KernelController]:
        return list(kernel.values())

    send, receive = trio.open_memory_channel(1_000_000)
    monitor = UeventMonitor(send, resync)
    sender = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 15)
    sender.bind((0, 0))
    async with trio.open_nursery() as nursery:
        await nursery.start(monitor.serve, sock)
        for i in range(10_000):
            dev = f"nvme{i % 100}"
            action = ("add", "change", "remove")[i % 3]
            if action == "remove":
                kernel.pop(dev, None)
            else:
                kernel[dev] = KernelController(device=dev, transport="tcp")
            env = {"SUBSYSTEM": "nvme"} | ({"NVME_AEN": "0x70f002"} if action == "change" else {})
            sender.sendto(encode_kernel_uevent(action, DEVPATH + dev, env), (0, 2))
        # a non-nvme event in the same storm is filtered out
        sender.sendto(encode_kernel_uevent("add", "/devices/x/sda", {"SUBSYSTEM": "block"}), (0, 2))
        with trio.fail_after(10):
            while monitor.resyncs < 2:
                await trio.sleep(0.01)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    sender.close()
    # the consumer's reconstruction: apply events in order, a resync replaces everything
    seen: set[str] = set()
    first = receive.receive_nowait()
    assert isinstance(first, KernelResync)  # the initial scan comes before any event
    while True:
        try:
            msg = receive.receive_nowait()
        except trio.WouldBlock:
            break
        if isinstance(msg, KernelResync):
            seen = {c.device for c in msg.controllers}
        elif msg.action == "remove":
            seen.discard(msg.device)
        else:
            assert msg.subsystem == "nvme"
            seen.add(msg.device)
    assert monitor.overflows >= 1 and monitor.received < 10_000  # events really were lost
    assert seen == set(kernel), "after the resync the consumer's view equals the kernel's"
    assert any("overflowed" in r.getMessage() for r in caplog.records)
