"""One I/O controller actor on the FakeKernel, under MockClock."""

from __future__ import annotations

import errno
import itertools
import logging
import random

import trio

from stas.actors.ioc import (
    DeviceRemoved,
    IocSettings,
    KernelFound,
    WantedChanged,
)
from stas.kernel.api import ConnectRequest
from stas.messages import IocWanted
from tests.helpers.entries import HOSTNQN
from tests.helpers.ioc import REQUEST, TID, WANTED, Run


async def test_connects_and_publishes_each_change(autojump_clock) -> None:
    r = Run()
    async with trio.open_nursery() as n:
        r.start(n)
        last = await r.settle()
        assert [s.state for s in r.statuses] == ["connecting", "connected"]
        assert (last.device, last.connected, last.adopted) == ("nvme0", True, False)
        assert len(r.kernel.connect_log) == 1
        n.cancel_scope.cancel()


async def test_adopt_given_connects_nothing(autojump_clock) -> None:
    r = Run()
    ext = r.kernel.add_external(
        transport="tcp", traddr="10.0.0.9", trsvcid="4420", subsysnqn="klingons", cntrltype="io"
    )
    async with trio.open_nursery() as n:
        r.start(n, adopt=ext)
        last = await r.settle()
        assert (last.device, last.state, last.adopted) == (ext.device, "connected", True)
        assert r.kernel.connect_log == []
        n.cancel_scope.cancel()


async def test_ealready_adopts_the_existing_controller(autojump_clock) -> None:
    r = Run()
    ext = r.kernel.add_external(
        transport="tcp",
        traddr="10.0.0.9",
        trsvcid="4420",
        subsysnqn="klingons",
        hostnqn=HOSTNQN,
        cntrltype="io",
    )
    async with trio.open_nursery() as n:
        r.start(n)
        last = await r.settle()
        assert (last.device, last.connected, last.adopted) == (ext.device, True, True)
        assert len(r.kernel.connect_log) == 1 and len(r.kernel.controllers) == 1
        n.cancel_scope.cancel()


async def test_retry_timing_fast_then_exponential(autojump_clock, caplog) -> None:
    r = Run()
    r.kernel.fail_next(errno.ECONNREFUSED, n=7, text="connection refused")
    caplog.set_level(logging.WARNING, "stas.ioc")
    async with trio.open_nursery() as n:
        r.start(n)
        await trio.sleep(250)
        gaps = [round(b - a, 6) for a, b in itertools.pairwise(r.times)]
        assert gaps == [3.0, 5.0, 10.0, 20.0, 40.0, 60.0, 60.0]
        last = await r.settle()
        assert last.connected and last.last_error == ""
        assert max(s.connect_attempts for s in r.statuses) == 8
        # the same error seven times is logged once
        assert sum("connect failed" in m for m in caplog.messages) == 1
        n.cancel_scope.cancel()


def test_jitter_stays_within_bounds() -> None:
    rng = random.Random(7)
    s = IocSettings(jitter=0.1)
    assert s.retry_delay(1, rng) == 3.0
    delays = [s.retry_delay(9, rng) for _ in range(200)]
    assert all(54.0 <= d <= 66.0 for d in delays) and len(set(delays)) > 100


async def test_ncc_gives_up_after_n_and_resumes_when_cleared(autojump_clock, caplog) -> None:
    caplog.set_level(logging.INFO, "stas.ioc")
    r = Run()
    r.kernel.fail_next(errno.ECONNREFUSED, n=100)
    ncc = IocWanted(TID, "discovered", ncc=True)
    async with trio.open_nursery() as n:
        r.start(n, wanted=ncc, settings=IocSettings(jitter=0, connect_attempts_on_ncc=2))
        await trio.sleep(3600)
        last = await r.settle()
        assert last.state == "gave-up" and last.ncc and len(r.times) == 2
        assert sum("waiting for the CDC" in m for m in caplog.messages) == 1
        r.kernel.failures.clear()
        t0 = trio.current_time()
        r.events.send_nowait(WantedChanged(WANTED, REQUEST))
        last = await r.settle()
        assert last.connected and not last.ncc and r.times[-1] == t0  # at once, no backoff
        n.cancel_scope.cancel()


async def test_ncc_without_a_limit_keeps_trying(autojump_clock) -> None:
    r = Run()
    r.kernel.fail_next(errno.ECONNREFUSED, n=100)
    async with trio.open_nursery() as n:
        r.start(n, wanted=IocWanted(TID, "discovered", ncc=True))
        await trio.sleep(600)
        assert (await r.settle()).state == "backoff" and len(r.times) > 10
        n.cancel_scope.cancel()


async def test_kernel_removal_reconnects_after_the_fast_retry(autojump_clock) -> None:
    r = Run()
    async with trio.open_nursery() as n:
        r.start(n)
        await r.settle()
        r.kernel.remove("nvme0")
        t0 = trio.current_time()
        r.events.send_nowait(DeviceRemoved("nvme9"))  # someone else's: ignored
        r.events.send_nowait(DeviceRemoved("nvme0"))
        last = await r.settle()
        assert (last.state, last.connected, last.device) == ("backoff", False, "nvme?")
        await trio.sleep(5)
        last = await r.settle()
        assert last.connected and r.times[-1] - t0 == 3.0 and len(r.times) == 2
        n.cancel_scope.cancel()


async def test_kernel_found_during_backoff_is_adopted(autojump_clock) -> None:
    r = Run()
    r.kernel.fail_next(errno.ECONNREFUSED, n=1)
    async with trio.open_nursery() as n:
        r.start(n)
        assert (await r.settle()).state == "backoff"
        ext = r.kernel.add_external(
            transport="tcp", traddr="10.0.0.9", trsvcid="4420", subsysnqn="klingons"
        )
        r.events.send_nowait(KernelFound(ext))
        last = await r.settle()
        assert (last.device, last.adopted) == (ext.device, True) and len(r.times) == 1
        await trio.sleep(100)
        assert len(r.times) == 1
        n.cancel_scope.cancel()


async def test_wanted_change_updates_the_next_attempt_only(autojump_clock) -> None:
    r = Run()
    r.kernel.fail_next(errno.ECONNREFUSED, n=1)
    new = ConnectRequest("tcp", "10.0.0.9", "4420", "klingons", HOSTNQN, kato=5)
    w = IocWanted(TID, "configured", params={"kato": "5"})
    async with trio.open_nursery() as n:
        r.start(n)
        await r.settle()
        r.events.send_nowait(WantedChanged(w, new))
        await trio.sleep(4)
        last = await r.settle()
        assert last.connected and last.origin == "configured" and last.params == {"kato": "5"}
        assert r.kernel.connect_log[-1].kato == 5
        r.events.send_nowait(WantedChanged(WANTED, REQUEST))  # connected: nothing reconnects
        await trio.sleep(100)
        assert len(r.times) == 2 and (await r.settle()).connected
        n.cancel_scope.cancel()


async def test_cancellation_never_disconnects(autojump_clock) -> None:
    r = Run()
    async with trio.open_nursery() as n:
        r.start(n)
        await r.settle()
        n.cancel_scope.cancel()
    assert r.kernel.disconnect_log == [] and list(r.kernel.controllers) == ["nvme0"]


async def test_closed_event_channel_keeps_the_timers(autojump_clock) -> None:
    r = Run()
    r.kernel.fail_next(errno.ECONNREFUSED, n=1)
    async with trio.open_nursery() as n:
        r.start(n)
        await r.settle()
        r.events.close()
        await trio.sleep(3.5)
        assert (await r.settle()).connected and len(r.times) == 2
        n.cancel_scope.cancel()
