"""DC actor against a scripted in-memory backend: timings, logging, caching, coalescing, exit."""

from __future__ import annotations

import itertools
import logging
import math
import random
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from stas.actors.dc import DcSettings, run_dc_actor
from stas.actors.dc_backend import (
    ConnectionLostEvent,
    DcConnection,
    DcEvent,
    LogPagesChangedEvent,
    ReconnectedEvent,
)
from stas.actors.dc_budget import MAX_CACHED_ENTRIES, EntryBudget
from stas.messages import DcStatus, DcUpdate, DcWanted, Tid
from stas.nvme.errors import (
    ConnectionLost,
    ConnectionRefused,
    NvmeStatusError,
    ProtocolError,
    StepTimeout,
)
from stas.nvme.logpage import DiscoveryLogPage, LogPageEntry
from tests.helpers.entries import dc_tid, log_entry
from tests.helpers.memory import held_after

TID = dc_tid("192.0.2.10", host_nqn="")
WANTED = DcWanted(tid=TID, origin="configured", params={"kato": "30"})
NO_JITTER = DcSettings(jitter=0.0)


def entry(subnqn: str, traddr: str = "192.0.2.20", subtype: int = 2) -> LogPageEntry:
    return log_entry(subnqn, traddr, subtype=subtype)


PAGE_A = DiscoveryLogPage(genctr=1, entries=(entry("nqn.a"), entry("nqn.b")))
PAGE_B = DiscoveryLogPage(genctr=2, entries=(entry("nqn.a"),))


class FakeConnection:
    """One scripted connection; fetches and events are driven by its backend."""

    def __init__(self, backend: FakeBackend, number: int) -> None:
        self.backend = backend
        self.device = f"nvme{number}"
        self.cntrltype = "discovery"
        self.dctype = "ddc"
        self.registered = True
        self.send, self.recv = trio.open_memory_channel[DcEvent](math.inf)

    async def get_log_page(self) -> DiscoveryLogPage:
        backend = self.backend
        backend.fetches.append(trio.current_time())
        await trio.sleep(backend.fetch_delay)
        if backend.fetch_errors:
            raise backend.fetch_errors.pop(0)
        return backend.page

    def events(self) -> trio.MemoryReceiveChannel[DcEvent]:
        return self.recv


@attrs.define
class FakeBackend:
    """Fails ``failures`` in order, then connects; records every call with its time."""

    failures: list[BaseException] = attrs.Factory(list)
    page: DiscoveryLogPage = PAGE_A
    fetch_delay: float = 0.0
    fetch_errors: list[BaseException] = attrs.Factory(list)
    exit_delay: float = 0.0
    attempts: list[float] = attrs.Factory(list)
    fetches: list[float] = attrs.Factory(list)
    exits: list[str] = attrs.Factory(list)
    conn: FakeConnection | None = None

    def connect(
        self, tid: Tid, params: Mapping[str, str], *, persistent: bool
    ) -> AbstractAsyncContextManager[DcConnection]:
        assert tid == TID and params == WANTED.params and persistent
        return self._connect()

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[DcConnection]:
        self.attempts.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        if self.failures:
            raise self.failures.pop(0)
        self.conn = FakeConnection(self, len(self.attempts))
        how = "normal"
        try:
            yield self.conn
        except BaseException as exc:
            how = type(exc).__name__
            raise
        finally:
            self.exits.append(f"started:{how}")
            await trio.sleep(self.exit_delay)
            self.exits.append("finished")

    async def event(self, event: DcEvent) -> None:
        assert self.conn is not None
        await self.conn.send.send(event)


@attrs.define
class Run:
    """The updates one actor run published, with their (virtual) times."""

    updates: list[tuple[float, DcUpdate]] = attrs.Factory(list)
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    finished: trio.Event = attrs.Factory(trio.Event)

    @property
    def last(self) -> DcStatus:
        return self.updates[-1][1].status

    def states(self) -> list[str]:
        return [u.status.state for _, u in self.updates]

    def changed(self) -> list[DcUpdate]:
        return [u for _, u in self.updates if u.log_pages_changed]


@asynccontextmanager
async def running(
    backend: FakeBackend,
    settings: DcSettings = NO_JITTER,
    initial: DcStatus | None = None,
) -> AsyncIterator[Run]:
    run = Run()
    send, recv = trio.open_memory_channel[DcUpdate](math.inf)

    async def actor() -> None:
        with run.scope:
            await run_dc_actor(
                WANTED, send, backend=backend, settings=settings, initial=initial,
                rng=random.Random(1),
            )  # fmt: skip
        run.finished.set()

    async def collect() -> None:
        async for update in recv:
            run.updates.append((trio.current_time(), update))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(actor)
        nursery.start_soon(collect)
        yield run
        run.scope.cancel()
        await run.finished.wait()
        nursery.cancel_scope.cancel()


def warnings_with(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and text in r.getMessage()
    ]


# --- connect ladder ---------------------------------------------------------------------------


async def test_retry_ladder_timing_and_one_warning(autojump_clock, caplog) -> None:
    caplog.set_level(logging.INFO, logger="stas.actors.dc")
    refused = [ConnectionRefused("connection to 192.0.2.10:8009 refused") for _ in range(7)]
    backend = FakeBackend(failures=refused)
    async with running(backend) as run:
        await trio.sleep(1000)
        gaps = [round(b - a, 6) for a, b in itertools.pairwise(backend.attempts)]
        assert gaps == [3, 5, 10, 20, 40, 60, 60]
        assert run.last.state == "connected" and run.last.connected
        assert run.last.connect_attempts == 0 and run.last.last_error == ""
        assert run.last.device == "nvme8" and run.last.dctype == "ddc" and run.last.registered
    assert warnings_with(caplog, "cannot connect") == [
        f"{TID}: cannot connect: connection to 192.0.2.10:8009 refused (retrying in 3 s)"
    ]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert f"{TID}: connected after 8 attempts (device nvme8, dctype ddc)" in infos


async def test_states_and_attempt_counter_while_failing(autojump_clock) -> None:
    backend = FakeBackend(failures=[ConnectionRefused("refused"), StepTimeout("ICResp", 5)])
    async with running(backend) as run:
        await trio.sleep(100)
    seen = [
        (u.status.state, u.status.connect_attempts, u.status.last_error) for _, u in run.updates
    ]
    assert seen[:5] == [
        ("connecting", 1, ""),
        ("backoff", 1, "refused"),
        ("connecting", 2, "refused"),
        ("backoff", 2, "timed out after 5 s waiting for ICResp"),
        ("connecting", 3, "timed out after 5 s waiting for ICResp"),
    ]
    assert seen[5] == ("connected", 0, "")


async def test_one_warning_per_distinct_error_in_a_streak(autojump_clock, caplog) -> None:
    errors: list[BaseException] = [ConnectionRefused("refused")] * 3
    errors += [OSError(113, "No route to host")] * 2 + [ConnectionRefused("refused")]
    backend = FakeBackend(failures=list(errors))
    async with running(backend):
        await trio.sleep(1000)
    assert [m.split(": ", 2)[-1] for m in warnings_with(caplog, "cannot connect")] == [
        "refused (retrying in 3 s)",
        "No route to host (retrying in 20 s)",
    ]


async def test_failure_summary_every_five_minutes(autojump_clock, caplog) -> None:
    caplog.set_level(logging.INFO, logger="stas.actors.dc")
    backend = FakeBackend(failures=[ConnectionRefused("refused") for _ in range(25)])
    async with running(backend):
        await trio.sleep(25 * 60)
    summaries = [r.getMessage() for r in caplog.records if " failed " in r.getMessage()]
    # 3 + 5 + 10 + 20 + 40 + 60 * n: the first failure past each 300 s mark sums up
    assert summaries == [
        f"{TID} failed 10 times in 318 s: refused",
        f"{TID} failed 15 times in 618 s: refused",
        f"{TID} failed 20 times in 918 s: refused",
        f"{TID} failed 25 times in 1218 s: refused",
    ]
    assert len(warnings_with(caplog, "cannot connect")) == 1


async def lose_each_connection_after(backend: FakeBackend, seconds: float, times: int) -> None:
    for n in range(times):
        while len(backend.attempts) <= n or backend.conn is None:
            await trio.sleep(0.5)
        await trio.sleep(seconds)
        await backend.event(ConnectionLostEvent("reset by peer"))
        backend.conn = None


async def test_connect_then_fail_climbs_the_ladder(autojump_clock, caplog) -> None:
    backend = FakeBackend()
    async with running(backend), trio.open_nursery() as nursery:
        nursery.start_soon(lose_each_connection_after, backend, 1.0, 7)
        await trio.sleep(400)
    gaps = [b - a for a, b in itertools.pairwise(backend.attempts)]
    # up for about 1 s, then 3, 5, 10, 20, 40, 60, 60: not every 3 s forever
    assert gaps[:7] == pytest.approx([4, 6, 11, 21, 41, 61, 61], abs=1)
    assert len(warnings_with(caplog, "connection lost")) == 1


async def test_a_healthy_connection_resets_the_ladder(autojump_clock, caplog) -> None:
    backend = FakeBackend()
    async with running(backend), trio.open_nursery() as nursery:
        nursery.start_soon(lose_each_connection_after, backend, 130.0, 4)
        await trio.sleep(4 * 140)
    gaps = [b - a for a, b in itertools.pairwise(backend.attempts)]
    # up 130 s with a page read: back in 3 s each time (a climbing ladder would be 5, 10, 20)
    assert gaps[:4] == pytest.approx([133, 133, 133, 133], abs=1)
    # each loss after a healthy connection is news again
    assert len(warnings_with(caplog, "connection lost")) == 4


@pytest.mark.parametrize(
    "error",
    [
        OSError(101, "Network is unreachable"),
        NvmeStatusError("Connect", 0x4182, "Connect Invalid Host"),
        ProtocolError("ICResp: PFV 1 is not supported"),
    ],
)
async def test_bad_peers_are_connect_failures_not_crashes(autojump_clock, error) -> None:
    backend = FakeBackend(failures=[error])
    async with running(backend) as run:
        await trio.sleep(10)
        assert run.updates[1][1].status.state == "backoff"
        assert run.updates[1][1].status.last_error == (
            error.strerror if isinstance(error, OSError) else str(error)
        )
        assert run.last.state == "connected"


async def test_a_bug_in_the_backend_reaches_the_supervisor(autojump_clock) -> None:
    backend = FakeBackend(failures=[RuntimeError("bug")])
    send, _recv = trio.open_memory_channel[DcUpdate](math.inf)
    with pytest.raises(RuntimeError, match="bug"):
        await run_dc_actor(WANTED, send, backend=backend, settings=NO_JITTER)


def test_retry_delay_ladder_and_cap() -> None:
    rng = random.Random(0)
    delays = [NO_JITTER.retry_delay(n, rng) for n in range(1, 10)]
    assert delays == [3, 5, 10, 20, 40, 60, 60, 60, 60]
    assert NO_JITTER.retry_delay(10_000, rng) == 60  # no overflow after days of failures


@given(failures=st.integers(2, 500), seed=st.integers(0, 2**32))
def test_jittered_delay_stays_within_bounds(failures: int, seed: int) -> None:
    settings = DcSettings(jitter=0.1)
    base = min(5.0 * 2.0 ** min(failures - 2, 60), 60.0)
    delay = settings.retry_delay(failures, random.Random(seed))
    assert base * 0.9 - 1e-9 <= delay <= base * 1.1 + 1e-9


# --- log page ---------------------------------------------------------------------------------


async def test_first_page_is_published_as_changed(autojump_clock) -> None:
    backend = FakeBackend()
    async with running(backend) as run:
        await trio.sleep(1)
        assert [u.status.log_pages for u in run.changed()] == [PAGE_A.entries]
        assert run.last.genctr == 1
        assert [d["subnqn"] for d in run.last.dlpes()] == ["nqn.a", "nqn.b"]


async def test_same_page_twice_is_changed_only_once(autojump_clock) -> None:
    backend = FakeBackend()
    async with running(backend) as run:
        await trio.sleep(1)
        await backend.event(LogPagesChangedEvent())
        await trio.sleep(1)
        assert len(backend.fetches) == 2
        assert len(run.changed()) == 1
        backend.page = PAGE_B
        await backend.event(LogPagesChangedEvent())
        await trio.sleep(1)
        assert len(backend.fetches) == 3
        assert [u.status.log_pages for u in run.changed()] == [PAGE_A.entries, PAGE_B.entries]
        assert run.last.genctr == 2


async def test_genctr_change_alone_counts_as_a_change(autojump_clock) -> None:
    backend = FakeBackend()
    async with running(backend) as run:
        await trio.sleep(1)
        backend.page = attrs.evolve(PAGE_A, genctr=7)
        await backend.event(ReconnectedEvent())
        await trio.sleep(1)
        assert [u.status.genctr for u in run.changed()] == [1, 7]


async def test_events_during_a_slow_fetch_coalesce_into_one_more_fetch(autojump_clock) -> None:
    backend = FakeBackend(fetch_delay=10.0)
    async with running(backend) as run:
        await trio.sleep(1)  # the first fetch is in progress
        for _ in range(5):
            await backend.event(LogPagesChangedEvent())
            await trio.sleep(1)
        await trio.sleep(100)
        assert [round(t - backend.fetches[0], 6) for t in backend.fetches] == [0, 10]
        assert len(run.changed()) == 1


async def test_fetch_failure_retries_every_20s_while_connected(autojump_clock, caplog) -> None:
    status = NvmeStatusError("Get Log Page", 0x0002, "Invalid Field in Command")
    backend = FakeBackend(fetch_errors=[status, status, StepTimeout("Get Log Page", 10)])
    async with running(backend) as run:
        await trio.sleep(100)
        assert [round(t - backend.fetches[0], 6) for t in backend.fetches] == [0, 20, 40, 60]
        assert len(backend.attempts) == 1
        assert "connecting" not in run.states()[2:]
        errors = [u.status.last_error for _, u in run.updates if u.status.last_error]
        assert errors == [
            "Get Log Page: Get Log Page failed: Invalid Field in Command (status 0x0002)",
            "Get Log Page: timed out after 10 s waiting for Get Log Page",
        ]
        assert run.last.last_error == "" and run.last.log_pages == PAGE_A.entries
    assert len(warnings_with(caplog, "cannot read the discovery log page")) == 2


async def test_change_notice_retries_a_failed_fetch_at_once(autojump_clock) -> None:
    backend = FakeBackend(fetch_errors=[StepTimeout("Get Log Page", 10)])
    async with running(backend) as run:
        await trio.sleep(2)
        await backend.event(LogPagesChangedEvent())
        await trio.sleep(1)
        assert [round(t - backend.fetches[0], 6) for t in backend.fetches] == [0, 2]
        assert run.last.log_pages == PAGE_A.entries


# --- connection loss --------------------------------------------------------------------------


async def test_loss_keeps_the_cache_and_reconnects_after_fast_retry(autojump_clock) -> None:
    backend = FakeBackend()
    async with running(backend) as run:
        await trio.sleep(1)
        lost_at = trio.current_time()
        await backend.event(ConnectionLostEvent("connection to 192.0.2.10:8009 closed by peer"))
        await trio.sleep(0.5)
        down = run.last
        assert down.state == "disconnected" and not down.connected
        assert down.device == "nvme?" and not down.registered
        assert down.log_pages == PAGE_A.entries and down.genctr == 1
        assert down.last_error == "connection to 192.0.2.10:8009 closed by peer"
        assert not run.updates[-1][1].log_pages_changed
        assert backend.exits == ["started:normal", "finished"]
        await trio.sleep(10)
        assert round(backend.attempts[1] - lost_at, 6) == 3
        assert run.last.state == "connected" and run.last.device == "nvme2"
        assert len(run.changed()) == 1  # the same page after reconnecting is no change


async def test_loss_then_failures_continue_up_the_ladder(autojump_clock) -> None:
    backend = FakeBackend()
    async with running(backend) as run:
        await trio.sleep(1)
        backend.failures = [ConnectionRefused("refused")] * 2
        await backend.event(ConnectionLostEvent("gone"))
        await trio.sleep(100)
        lost_at = 1.0 + backend.attempts[0]
        assert [round(t - lost_at, 6) for t in backend.attempts[1:]] == [3, 8, 18]
        assert all(u.status.log_pages == PAGE_A.entries for _, u in run.updates[2:])


async def test_connection_lost_while_fetching(autojump_clock) -> None:
    backend = FakeBackend(fetch_errors=[ConnectionLost("connection closed by peer")])
    async with running(backend) as run:
        await trio.sleep(1)
        assert "disconnected" in run.states()
        await trio.sleep(5)
        assert len(backend.attempts) == 2 and run.last.log_pages == PAGE_A.entries


async def test_end_of_event_stream_is_a_loss(autojump_clock) -> None:
    backend = FakeBackend()
    async with running(backend) as run:
        await trio.sleep(1)
        assert backend.conn is not None
        await backend.conn.send.aclose()
        await trio.sleep(1)
        assert run.last.state == "disconnected"
        assert run.last.last_error == "the connection's event stream ended"


# --- warm start and exit ----------------------------------------------------------------------


async def test_warm_start_publishes_cached_pages_before_connecting(autojump_clock) -> None:
    cached = DcStatus(
        tid=TID, origin="discovered", state="connected", connected=True, device="nvme3",
        genctr=1, log_pages=PAGE_A.entries, last_error="old",
    )  # fmt: skip
    backend = FakeBackend(failures=[ConnectionRefused("refused")])
    async with running(backend, initial=cached) as run:
        await trio.sleep(0.001)
        first_time, first = run.updates[0]
        assert first.log_pages_changed
        assert first.status.log_pages == PAGE_A.entries and first.status.state == "idle"
        assert first.status.origin == "configured" and first.status.device == "nvme?"
        assert first.status.params == WANTED.params and first.status.last_error == ""
        assert first_time <= backend.attempts[0]
        assert run.updates[1][1].status.state == "connecting"
        await trio.sleep(10)
        assert all(u.status.log_pages == PAGE_A.entries for _, u in run.updates)
        assert len(run.changed()) == 1  # the DC confirmed the cache: no change


async def test_cancel_leaves_the_backend_and_publishes_nothing_more(autojump_clock) -> None:
    backend = FakeBackend(exit_delay=1.0)
    async with running(backend) as run:
        await trio.sleep(1)
        count = len(run.updates)
        run.scope.cancel()
        await run.finished.wait()
        assert backend.exits == ["started:Cancelled", "finished"]
        await trio.sleep(1)
        assert len(run.updates) == count


async def test_cancel_is_bounded_when_the_backend_hangs(autojump_clock, caplog) -> None:
    backend = FakeBackend(exit_delay=math.inf)
    settings = DcSettings(jitter=0.0, cleanup_timeout=4.0)
    async with running(backend, settings=settings) as run:
        await trio.sleep(1)
        start = trio.current_time()
        run.scope.cancel()
        await run.finished.wait()
        assert trio.current_time() - start == pytest.approx(4.0)
        assert backend.exits == ["started:Cancelled"]
    assert warnings_with(caplog, "disconnect did not finish within 4 s")


async def test_cancel_during_backoff_returns_at_once(autojump_clock) -> None:
    backend = FakeBackend(failures=[ConnectionRefused("refused")] * 3)
    async with running(backend) as run:
        await trio.sleep(5)
        start = trio.current_time()
        run.scope.cancel()
        await run.finished.wait()
        assert trio.current_time() == start
        assert backend.exits == []


async def test_actor_returns_when_nobody_reads_updates(autojump_clock) -> None:
    backend = FakeBackend()
    send, recv = trio.open_memory_channel[DcUpdate](0)
    await recv.aclose()
    with trio.fail_after(60):
        await run_dc_actor(WANTED, send, backend=backend, settings=NO_JITTER)
    assert backend.attempts == []


# --- one cap on cached entries across all DCs (issue 13 item 4) --------------------------------


async def test_entry_budget_cuts_a_page_once_and_gives_back_on_exit(autojump_clock, caplog):
    budget = EntryBudget(limit=3)
    assert budget.grant("another DC", 2) == 2
    backend = FakeBackend()  # PAGE_A: 2 entries
    async with running(backend, attrs.evolve(NO_JITTER, entries=budget)) as run:
        await trio.sleep(1)
        assert len(run.last.log_pages) == 1 and budget.total == 3
        await backend.event(LogPagesChangedEvent())  # same page again: still cut, no new warning
        await trio.sleep(1)
        budget.release("another DC")
        await backend.event(LogPagesChangedEvent())
        await trio.sleep(1)
        assert run.last.log_pages == PAGE_A.entries and budget.total == 2
    assert budget.total == 0  # the actor's share is free again
    assert warnings_with(caplog, "cache of discovery log page entries is full") == [
        f"{TID}: the cache of discovery log page entries is full (3 entries across all "
        "discovery controllers); keeping 1 of its 2 entries"
    ]


async def test_entry_budget_applies_to_a_warm_start_cache(autojump_clock) -> None:
    budget = EntryBudget(limit=1)
    cached = DcStatus(tid=TID, origin="configured", genctr=1, log_pages=PAGE_A.entries)
    backend = FakeBackend(failures=[ConnectionRefused("refused")])
    async with running(backend, attrs.evolve(NO_JITTER, entries=budget), cached) as run:
        await trio.sleep(1)
        first = run.updates[0][1].status
        assert len(first.log_pages) == 1 and budget.total == 1


def test_budget_grants_never_exceed_the_limit() -> None:
    budget = EntryBudget(limit=10)
    assert [budget.grant(n, 4) for n in "abc"] == [4, 4, 2]
    assert budget.grant("a", 1) == 1 and budget.total == 7  # shrinking gives back
    assert budget.grant("c", 8) == 5 and budget.total == 10
    budget.release("b")
    assert budget.total == 6 and budget.held("b") == 0


def test_the_default_cap_keeps_the_worst_case_cache_small() -> None:
    """MAX_CACHED_ENTRIES of the largest entries a peer can send stay well under 100 MB."""
    big = log_entry("nqn." + "n" * 219, "a" * 255, "4" * 31)
    raw = DiscoveryLogPage(genctr=1, entries=[big] * 500).encode()
    page, kept = held_after(lambda: DiscoveryLogPage.decode(raw))
    per_entry = kept / len(page.entries)
    assert per_entry * MAX_CACHED_ENTRIES < 40 * 2**20, per_entry
