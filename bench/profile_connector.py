#!/usr/bin/env python3
"""stacd's connector alone, in process, at benchmark (4)'s size: where memory and time go.

Not a benchmark: a tool for finding what to fix, without D-Bus, stafd or the simulator.
The connector runs on the fake kernel and receives ``--dcs`` log pages of ``--subsystems``
entries each (as the stafd client would hand them over), until every I/O controller is
connected. Printed: the time to converge, the memory that stayed allocated (tracemalloc,
top sites by line and by traceback with ``--trace``), bytes per I/O controller, live objects
by type, and with ``--profile`` the top of a cProfile of the whole run. The fake kernel's
log of connect requests is cleared before measuring: the real kernel keeps none.
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


async def converge(dcs: int, subsystems: int) -> tuple[float, object]:
    from stas.actors.connector import Connector
    from stas.config import load_service_config
    from stas.kernel.fake import FakeKernel
    from stas.messages import DcLogPages, StacdSnapshot, Tid

    config, _ = load_service_config("/nonexistent/stacd.conf", "stacd")  # the defaults
    published: AsyncValue[StacdSnapshot] = AsyncValue(StacdSnapshot())
    kernel = FakeKernel()
    conn = Connector(
        config=config, host_nqn=HOSTNQN, hostid=HOSTNQN[-36:], kernel=kernel, published=published
    )
    send, inbox = trio.open_memory_channel(1024)
    total = dcs * subsystems
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.run, inbox)
        nursery.start_soon(feed_uevents, kernel, send.clone())
        t0, c0 = time.perf_counter(), time.process_time()
        for d in range(1, dcs + 1):
            dc = Tid("tcp", "::1", str(8009 + d), "nqn.2014-08.org.nvmexpress.discovery")
            await send.send(DcLogPages(dc, tuple(dlpe(d, s) for s in range(subsystems))))
        while len(kernel.controllers) < total:  # cheap; then the published state, once
            await trio.sleep(0.01)
        while not all(s.connected for s in published.value.iocs):
            await trio.sleep(0.01)
        elapsed = time.perf_counter() - t0
        print(f"CPU {time.process_time() - c0:.2f} s")
        await trio.sleep(0.1)
        # The fake kernel's record of every request (a test's view) is no stacd memory: the
        # real kernel keeps none. Cleared so the figure is what stacd itself holds.
        kernel.connect_log.clear()
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
    elapsed, keep = trio.run(converge, args.dcs, args.subsystems)
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
