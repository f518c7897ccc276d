"""In-process benchmarks: the log page codec (1) and the 100,000-uevent storm (5)."""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket
import struct
import time

import trio

from bench.report import Row
from stas.nvme.logpage import ENTRY_SIZE, DiscoveryLogPage, Limits, LogPageEntry

HEADER_SIZE = 1024
_INTS = struct.Struct("<BBBBHHHH")


def log_page(entries: int) -> bytes:
    return DiscoveryLogPage(
        genctr=1,
        entries=tuple(
            LogPageEntry(
                trtype=3,
                adrfam=2,
                subtype=2,
                treq=0,
                portid=1,
                cntlid=0xFFFF,
                asqsz=32,
                eflags=0,
                trsvcid="4420",
                subnqn=f"nqn.2026-01.io.bench:sub{i:05d}",
                traddr="::1",
            )
            for i in range(entries)
        ),
    ).encode()


def slice_only(data: bytes) -> list[tuple[object, ...]]:
    """The floor: struct-unpack the integers and slice the text fields, nothing checked."""
    numrec = struct.unpack_from("<Q", data, 8)[0]
    out = []
    for n in range(numrec):
        pos = HEADER_SIZE + n * ENTRY_SIZE
        out.append(
            (
                *_INTS.unpack_from(data, pos),
                data[pos + 32 : pos + 64],
                data[pos + 256 : pos + 512],
                data[pos + 512 : pos + 768],
                data[pos + 768 : pos + 1024],
            )
        )
    return out


def _time(fn, data: bytes, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(data)
        samples.append(time.perf_counter() - t0)
    return samples


def bench_codec(runs: int) -> list[Row]:
    """(1) decode 10,000 entries: under 50 ms and within 2x of the struct-slicing floor."""
    data = log_page(10_000)
    # stafd's default cap is 8,192 records; the benchmark raises it to measure the codec alone
    limits = Limits(max_records=10_000, max_bytes=len(data))

    def decode(page: bytes) -> DiscoveryLogPage:
        return DiscoveryLogPage.decode(page, limits=limits)

    ours = _time(decode, data, runs)
    floor = _time(slice_only, data, runs)
    assert len(decode(data).entries) == len(slice_only(data)) == 10_000
    med_ours, med_floor = sorted(ours)[len(ours) // 2], sorted(floor)[len(floor) // 2]
    ratio = med_ours / med_floor
    return [
        Row(
            "(1) decode a 10,000-entry log page",
            ours,
            target="< 50 ms",
            passed=med_ours < 0.050,
        ),
        Row("(1) struct-slicing floor, same page", floor),
        Row(
            "(1) decode / floor",
            text=f"{ratio:.2f}x",
            target="<= 2x",
            passed=ratio <= 2.0,
            note="floor = struct.unpack_from of the integers + slicing of the text fields, "
            "no validation; limits raised past stafd's 8,192-record cap",
        ),
    ]


# --- (5) the uevent storm -------------------------------------------------------------------


def bench_uevent_storm(events: int, runs: int) -> list[Row]:
    """(5) ``events`` uevents at once into an 8 KiB receive buffer, over real netlink."""
    if os.geteuid() != 0:
        return [Row("(5) uevent storm", text="skipped: sending to netlink needs root")]
    results = [trio.run(_storm_once, events, seed) for seed in range(runs)]
    exact = all(r[1] for r in results)
    return [
        Row(
            f"(5) {events:,} uevents, 8 KiB buffer: last event sent -> state exact",
            [r[0] for r in results],
            target="exact final state",
            passed=exact,
            note="; ".join(r[2] for r in results[:1]),
        )
    ]


async def _storm_once(events: int, seed: int) -> tuple[float, bool, str]:
    from stas.actors.uevents import (
        NETLINK_KOBJECT_UEVENT,
        UDEV_GROUP,
        UeventMonitor,
        open_uevent_socket,
        run_uevent_monitor,
    )
    from stas.kernel.api import KernelController, Uevent
    from stas.kernel.uevent_codec import encode_kernel_uevent
    from stas.messages import KernelResync

    base = f"/devices/virtual/stas-bench-{secrets.token_hex(4)}/"
    kernel: dict[str, KernelController] = {}

    async def resync() -> list[KernelController]:
        return list(kernel.values())

    seen: set[str] = set()

    def apply(msg: object) -> None:
        nonlocal seen
        if isinstance(msg, KernelResync):
            seen = {c.device for c in msg.controllers}
        elif isinstance(msg, Uevent) and msg.devpath.startswith(base):
            if msg.action == "remove":
                seen.discard(msg.device)
            elif msg.action == "add":
                seen.add(msg.device)

    logging.getLogger("stas.uevents").setLevel(logging.ERROR)  # the overflow warning is expected
    sock = open_uevent_socket(groups=UDEV_GROUP, rcvbuf=4096)
    sender = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)
    sender.bind((0, 0))
    send, receive = trio.open_memory_channel(100_000)
    mon = UeventMonitor(send, resync)
    rng = random.Random(seed)
    with sender:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: run_uevent_monitor(
                    send,
                    resync=resync,
                    sock_factory=lambda: sock,
                    monitor=mon,
                    task_status=task_status,
                )
            )
            apply(await receive.receive())  # the initial resync
            for i in range(events):  # no checkpoint: the monitor cannot read meanwhile
                dev = f"nvme{rng.randrange(1000)}"
                action = rng.choice(("add", "change", "remove"))
                if action == "add":
                    kernel[dev] = KernelController(device=dev, transport="tcp")
                elif action == "remove":
                    kernel.pop(dev, None)
                env = {"NVME_AEN": "0x70f002"} if action == "change" else {}
                data = encode_kernel_uevent(
                    action, base + dev, {"SUBSYSTEM": "nvme", "SEQNUM": str(i), **env}
                )
                sender.sendto(data, (0, 2))
            t0 = time.perf_counter()
            with trio.fail_after(60):
                while seen != set(kernel) or mon.resyncs < 2:
                    apply(await receive.receive())
            elapsed = time.perf_counter() - t0
            nursery.cancel_scope.cancel()
    note = (
        f"{mon.delivered} delivered, {mon.lost} lost (SO_MEMINFO), {mon.overflows} overflow(s), "
        f"{mon.resyncs} resyncs, final {len(kernel)} controllers"
    )
    return elapsed, seen == set(kernel), note
