"""A discovery controller gone for an hour and back, in virtual time (MockClock).

The real DC actor (stafd's per-DC retry ladder) against a scripted DC that answers, vanishes
for 3,600 s (every connect refused), then answers again. What an operator needs from that
hour: attempts bounded by the backoff cap, not a retry storm and not giving up; one warning,
not one per attempt; the cached log page kept (stacd must not read "gone" as "no
controllers"); reconnection within one backoff step of the DC coming back.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import trio
import trio.testing

from stas.actors.dc import DcSettings, run_dc_actor
from stas.actors.dc_backend import ConnectionLostEvent, DcEvent
from stas.messages import DcUpdate, DcWanted, Tid
from stas.nvme.errors import ConnectionRefused
from stas.nvme.logpage import DiscoveryLogPage, LogPageEntry

TID = Tid("tcp", "192.0.2.77", "8009", "nqn.2014-08.org.nvmexpress.discovery")
WANTED = DcWanted(tid=TID, origin="configured", params={})
HOUR = 3600.0
PAGE = DiscoveryLogPage(
    genctr=5,
    entries=(
        LogPageEntry(
            trtype=3, adrfam=1, subtype=2, treq=0, portid=1, cntlid=0xFFFF, asqsz=32,
            eflags=0, trsvcid="4420", subnqn="nqn.2026-01.io.faults:vol", traddr="192.0.2.77",
        ),
    ),
)  # fmt: skip


class Conn:
    device, cntrltype, dctype, registered = "nvme7", "discovery", "ddc", True

    def __init__(self) -> None:
        self.send, self.recv = trio.open_memory_channel[DcEvent](math.inf)

    async def get_log_page(self) -> DiscoveryLogPage:
        await trio.lowlevel.checkpoint()
        return PAGE

    def events(self) -> trio.MemoryReceiveChannel[DcEvent]:
        return self.recv


class VanishingDc:
    """Up until ``gone_at``, refusing every connect for ``HOUR``, then up again."""

    def __init__(self, gone_at: float) -> None:
        self.gone_at = gone_at
        self.back_at = gone_at + HOUR
        self.attempts: list[float] = []
        self.conn: Conn | None = None

    def connect(self, tid: Tid, params: Mapping[str, str], *, persistent: bool):
        return self._connect()

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[Conn]:
        now = trio.current_time()
        self.attempts.append(now)
        await trio.lowlevel.checkpoint()
        if self.gone_at <= now < self.back_at:
            raise ConnectionRefused(f"connection to {TID.traddr}:8009 refused")
        self.conn = Conn()
        yield self.conn


def test_dc_gone_for_an_hour_then_back(caplog) -> None:
    caplog.set_level(logging.INFO, logger="stas.actors.dc")
    clock = trio.testing.MockClock(autojump_threshold=0)
    settings = DcSettings()
    dc = VanishingDc(gone_at=10.0)
    updates: list[tuple[float, DcUpdate]] = []

    async def main() -> None:
        send, recv = trio.open_memory_channel[DcUpdate](math.inf)

        async def collect() -> None:
            async for update in recv:
                updates.append((trio.current_time(), update))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect)
            nursery.start_soon(
                lambda: run_dc_actor(
                    WANTED, send, backend=dc, settings=settings, rng=random.Random(7)
                )
            )
            await trio.sleep(dc.gone_at)
            assert dc.conn is not None
            await dc.conn.send.send(ConnectionLostEvent("connection closed by peer"))
            await trio.sleep(HOUR + 2 * settings.backoff_max)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=clock)

    during = [t for t in dc.attempts if dc.gone_at <= t < dc.back_at]
    cap = settings.backoff_max * (1 - settings.jitter)
    assert len(during) <= HOUR / cap + 8, f"{len(during)} attempts in an hour: a retry storm"
    assert len(during) >= HOUR / (settings.backoff_max * (1 + settings.jitter)), "gave up"
    gaps = [b - a for a, b in itertools.pairwise(during)]
    assert max(gaps) <= settings.backoff_max * (1 + settings.jitter) + 1e-6

    after = [t for t in dc.attempts if t >= dc.back_at]
    assert after, "never reconnected"
    assert after[0] - dc.back_at <= settings.backoff_max * (1 + settings.jitter) + 1e-6
    final = updates[-1][1].status
    assert final.connected and final.state == "connected"

    # the cache survived the hour: no update in between published an empty page
    gone = [u.status for t, u in updates if dc.gone_at < t < dc.back_at]
    assert gone and all(s.log_pages == PAGE.entries for s in gone)
    assert sum(1 for _, u in updates if u.log_pages_changed) == 1  # same page after: no change

    # one warning for the streak (plus periodic summaries), not one per attempt
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    warnings = [r for r in refused if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert len(refused) <= 1 + HOUR / settings.summary_every + 1
    assert str(TID.traddr) in warnings[0].getMessage()
