#!/usr/bin/env python3
"""stacd's connector alone, in process, at benchmark (4)'s size: where memory and time go.

Not a benchmark: a tool for finding what to fix, without D-Bus, stafd or the simulator.
The connector runs on the fake kernel and receives ``--dcs`` log pages of ``--subsystems``
entries each (as the stafd client would hand them over), until every I/O controller is
connected. Printed: the time to converge, the memory that stayed allocated (tracemalloc,
top sites by line and by traceback with ``--trace``), bytes per I/O controller, live objects
by type, and with ``--profile`` the top of a cProfile of the whole run. The fake kernel's
log of connect requests is cleared before measuring: the real kernel keeps none.

``--io DIR`` adds what a real kernel and host add to each connect, so that stacd's CPU per
connect can be measured natively (``perf stat -e instructions:u``, ``strace -c -f``): the
ownership registry and connect intents on disk under DIR, every uevent a connect brings (the
controller's add and 'connected' change, its subsystem's, namespace's, bdi's and generic
device's) as kernel datagrams read by ``UeventMonitor`` from a socket, and each controller
read from a sysfs-like tree under DIR by ``read_device`` in a worker thread, as the libnvme
backend does. The emulated kernel's own share (two small files per controller) is constant.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import gc
import pstats
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import trio
from trio_util import AsyncValue

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7fb0"


def dlpe(dc: int, sub: int) -> dict[str, str]:
    """One entry as stacd receives it from stafd (upstream's DLPE dict): every key and value a
    string object of its own, as the D-Bus decoder makes them (literals would all be shared)."""
    entry = {
        "trtype": "tcp", "adrfam": "ipv6", "traddr": "::1", "trsvcid": str(8009 + dc),
        "subnqn": f"nqn.2026-01.io.bench:dc{dc:03d}-sub{sub:04d}", "subtype": "nvme",
        "treq": "not specified", "portid": str(dc), "cntlid": "65535", "asqsz": "32",
        "eflags": "0",
    }  # fmt: skip
    return {k.encode().decode(): v.encode().decode() for k, v in entry.items()}


class SysfsKernel:
    """The fake kernel behind what the libnvme backend does per connect: the connect in a
    worker thread, then the new device's attributes read from a sysfs-like tree (also in a
    thread), and ``controller``/``list_controllers`` read from that tree. Each device's
    static attributes are written before measuring; a connect writes the two that depend on
    the request (``subsysnqn``, ``address``), as the kernel would have them."""

    STATIC = {"transport": "tcp", "hostnqn": HOSTNQN, "hostid": HOSTNQN[-36:],
              "cntrltype": "io", "dctype": "none", "state": "live",
              "model": "Linux", "serial": "0123456789abcdef"}  # fmt: skip

    def __init__(self, fake: Any, root: Path, devices: int) -> None:
        self.fake, self.root, self.events = fake, root, fake.events
        self.delivered: dict[str, trio.Event] = {}  # devices whose 'add' reached the inbox
        for n in range(devices):
            d = root / f"nvme{n}"
            (d / f"nvme{n}n1").mkdir(parents=True)
            for name, value in self.STATIC.items():
                (d / name).write_text(value + "\n")

    def capabilities(self) -> frozenset[str]:
        return frozenset(self.fake.capabilities())

    def _write(self, ctrl: Any) -> None:
        d = self.root / ctrl.device
        (d / "subsysnqn").write_text(ctrl.subsysnqn + "\n")
        address = f"traddr={ctrl.traddr},trsvcid={ctrl.trsvcid},src_addr={ctrl.src_addr}"
        (d / "address").write_text(address + "\n")

    async def connect(self, req: Any) -> Any:
        ctrl = await self.fake.connect(req)  # its 'add' goes out now, as the kernel's does
        await trio.to_thread.run_sync(self._write, ctrl)
        # The kernel's connect goes on long after its 'add' (in the VM 160 ms, the event's
        # trip to stacd's inbox well under 1 ms): it ends once the monitor passed the 'add' on.
        await self.delivered.setdefault(ctrl.device, trio.Event()).wait()
        del self.delivered[ctrl.device]
        await trio.sleep(0.01)  # and on through the connector's inbox
        found = await self.controller(ctrl.device)
        return found if found is not None else ctrl

    async def disconnect(self, device: str) -> None:
        await self.fake.disconnect(device)

    async def controller(self, device: str) -> Any:
        from stas.kernel.sysfs import read_device

        return await trio.to_thread.run_sync(read_device, device, self.root)

    async def list_controllers(self) -> list[Any]:
        from stas.kernel.sysfs import read_device

        def read_all() -> list[Any]:
            found = (read_device(d, self.root) for d in self.fake.controllers)
            return [c for c in found if c is not None]

        return await trio.to_thread.run_sync(read_all)


def kernel_datagrams(action: str, ctrl: Any) -> list[bytes]:
    """What the kernel multicasts for one controller's add or remove: the nvme events
    (on add, also the 'connected' change) and the namespace's block, bdi and generic
    devices' and the subsystem's (the monitor reads and drops these)."""
    from stas.kernel.uevent_codec import encode_kernel_uevent as enc

    n = ctrl.device[4:]
    nvme = {"SUBSYSTEM": "nvme", "MAJOR": "241", "MINOR": n, "DEVNAME": ctrl.device,
            "NVME_TRTYPE": ctrl.transport, "NVME_TRADDR": ctrl.traddr,
            "NVME_TRSVCID": ctrl.trsvcid, "NVME_HOST_TRADDR": "none",
            "NVME_HOST_IFACE": "none"}  # fmt: skip
    ctl = f"/devices/virtual/nvme-fabrics/ctl/{ctrl.device}"
    sub = f"/devices/virtual/nvme-subsystem/nvme-subsys{n}"
    others = [
        enc(action, sub, {"SUBSYSTEM": "nvme-subsystem"}),
        enc(action, f"{sub}/nvme{n}n1", {"SUBSYSTEM": "block", "MAJOR": "259", "MINOR": n,
                                         "DEVNAME": f"nvme{n}n1", "DEVTYPE": "disk"}),
        enc(action, f"/devices/virtual/bdi/259:{n}", {"SUBSYSTEM": "bdi"}),
        enc(action, f"{ctl}/ng{n}n1", {"SUBSYSTEM": "nvme-generic", "MAJOR": "240",
                                       "MINOR": n, "DEVNAME": f"ng{n}n1"}),
    ]  # fmt: skip
    if action == "add":
        return [
            enc("add", ctl, nvme),
            *others,
            enc("change", ctl, nvme | {"NVME_EVENT": "connected"}),
        ]
    return [*others, enc(action, ctl, nvme)]


class Delivered:
    """The monitor's send channel, noting each 'add' passed on (``SysfsKernel.connect``)."""

    def __init__(self, send: Any, kernel: SysfsKernel) -> None:
        self._send, self._kernel = send, kernel

    async def send(self, msg: Any) -> None:
        await self._send.send(msg)
        if getattr(msg, "action", None) == "add":
            self._kernel.delivered.setdefault(msg.device, trio.Event()).set()


async def feed_datagrams(kernel: Any, sock: Any) -> None:
    """The fake kernel's uevents, as datagrams on the monitor's socket."""
    async for ev in kernel.events:
        ctrl = kernel.fake.controllers.get(ev.device)
        if ctrl is None:
            continue  # a remove: not part of a converge
        for datagram in kernel_datagrams(ev.action, ctrl):
            sock.send(datagram)  # a blocking socket with room for thousands of datagrams


async def converge(dcs: int, subsystems: int, io: Path | None = None) -> tuple[float, object]:
    from stas.actors.connector import Connector
    from stas.config import load_service_config
    from stas.kernel.fake import FakeKernel
    from stas.messages import DcLogPages, StacdSnapshot, Tid

    config, _ = load_service_config("/nonexistent/stacd.conf", "stacd")  # the defaults
    published: AsyncValue[StacdSnapshot] = AsyncValue(StacdSnapshot())
    total = dcs * subsystems
    fake = FakeKernel()
    kernel: Any = fake
    registry = None
    if io is not None:
        from stas.coexist.registry import Registry

        (io / "seqnum").write_text("1234\n")
        registry = Registry(io / "registry", seqnum_file=io / "seqnum")
        kernel = SysfsKernel(fake, io / "sysfs", total)
    conn = Connector(
        config=config, host_nqn=HOSTNQN, hostid=HOSTNQN[-36:], kernel=kernel,
        published=published, registry=registry,
    )  # fmt: skip
    send, inbox = trio.open_memory_channel(1024)
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.run, inbox)
        if io is None:
            nursery.start_soon(feed_uevents, kernel, send.clone())
        else:
            import socket

            from stas.actors.uevents import UeventMonitor

            theirs, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 2**20)
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 2**20)
            ours.setblocking(False)
            monitor = UeventMonitor(Delivered(send, kernel), kernel.list_controllers)  # type: ignore[arg-type]
            await nursery.start(monitor.serve, ours)
            nursery.start_soon(feed_datagrams, kernel, theirs)
        t0, c0 = time.perf_counter(), time.process_time()
        for d in range(1, dcs + 1):
            dc = Tid("tcp", "::1", str(8009 + d), "nqn.2014-08.org.nvmexpress.discovery")
            await send.send(DcLogPages(dc, tuple(dlpe(d, s) for s in range(subsystems))))
        while len(fake.controllers) < total:  # cheap; then the published state, once
            await trio.sleep(0.01)
        while not all(s.connected for s in published.value.iocs):
            await trio.sleep(0.01)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - c0
        print(f"CPU {cpu:.2f} s = {cpu / total * 1e3:.3f} ms per connect")
        await trio.sleep(0.1)
        # The fake kernel's record of every request (a test's view) is no stacd memory: the
        # real kernel keeps none. Cleared so the figure is what stacd itself holds.
        fake.connect_log.clear()
        keep = (conn, kernel)
        result = (elapsed, keep)
        if tracemalloc.is_tracing():
            result = (elapsed, (keep, tracemalloc.take_snapshot()))
        nursery.cancel_scope.cancel()
    return result


async def feed_uevents(kernel: Any, send: trio.MemorySendChannel[Any]) -> None:
    """The fake kernel's uevents into the connector, as stacd's "kernel events" child does
    (left unread, 10,000 of them stayed queued and were counted as the connector's)."""
    async with send:
        async for ev in kernel.events:
            await send.send(ev)


def patch_snapshot() -> None:
    """What the snapshot's sorting costs, tried here without editing connector_core: the
    records in insertion order, unsorted (the sorted order would be built when read)."""
    from stas.actors import connector as shell
    from stas.actors import connector_core as core

    def snapshot(st):  # type: ignore[no-untyped-def]
        if not st.dirty:
            return None
        st.dirty = False
        return tuple(a.status for a in st.actors.values())

    core.snapshot = snapshot
    shell.core.snapshot = snapshot


def patch_mailbox() -> None:
    """The proposed change in Connector._start, tried here without editing it: the actor's
    mailbox a ``Mailbox`` (send and receive side in one) instead of a memory channel pair."""
    from stas.actors import connector as shell
    from stas.actors.ioc import Mailbox

    real = trio.open_memory_channel

    class _Open:
        def __getitem__(self, _t: object) -> _Open:
            return self

        def __call__(self, size: float) -> tuple[object, object]:
            if size == shell.ACTOR_EVENTS:
                box = Mailbox(int(size))
                return box, box
            return real(size)

    class _Trio:
        def __getattr__(self, name: str) -> object:
            return _Open() if name == "open_memory_channel" else getattr(trio, name)

    shell.trio = _Trio()  # type: ignore[assignment]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dcs", type=int, default=100)
    ap.add_argument("--subsystems", type=int, default=100)
    ap.add_argument("--trace", type=int, default=0, metavar="DEPTH")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument(
        "--io",
        type=Path,
        metavar="DIR",
        help="registry, intents, uevent datagrams and sysfs reads as on a real host (DIR empty)",
    )
    ap.add_argument(
        "--mailbox",
        action="store_true",
        help="try stas.actors.ioc.Mailbox as each actor's mailbox (instead of a channel pair)",
    )
    ap.add_argument(
        "--unsorted-snapshot",
        action="store_true",
        help="try the snapshot unsorted (what sorting it after every burst costs)",
    )
    args = ap.parse_args()
    total = args.dcs * args.subsystems
    import logging

    logging.basicConfig(level=logging.WARNING)
    if args.unsorted_snapshot:
        patch_snapshot()
    if args.mailbox:
        patch_mailbox()
    gc.collect()
    if args.trace:
        tracemalloc.start(args.trace)
    prof = cProfile.Profile() if args.profile else None
    if prof:
        prof.enable()
    elapsed, keep = trio.run(converge, args.dcs, args.subsystems, args.io)
    if prof:
        prof.disable()
    print(f"{total:,} I/O controllers connected in {elapsed:.2f} s")
    if args.trace:
        _, snap = keep  # type: ignore[misc]
        snap = snap.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        stats = snap.statistics("lineno")
        size = sum(s.size for s in stats)
        print(f"allocated and kept: {size / 2**20:.1f} MiB = {size / total:,.0f} B per IOC")
        for s in stats[:30]:
            print(f"{s.size / 2**20:7.2f} MiB {s.count:8d}  {s.traceback[0]}")
        print("--- by traceback")
        for s in snap.statistics("traceback")[:10]:
            print(f"{s.size / 2**20:7.2f} MiB {s.count:8d}")
            for line in s.traceback.format()[-2 * args.trace :]:
                print("      " + line)
    counts = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    print("--- live gc-tracked objects by type (top 20)")
    for name, n in counts.most_common(20):
        print(f"{n:9d}  {name}")
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
