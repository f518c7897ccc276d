"""stacd's connector on the fake kernel under MockClock: disconnects overlap (bounded), the
connector keeps reacting while they run, a subsystem wanted again comes back once its old
controller is gone, and a failure is logged once."""

from __future__ import annotations

import errno
import logging

import pytest
import trio
import trio.testing

from stas.actors import connector as connector_mod
from stas.coexist.registry import Registry
from stas.kernel.api import KernelError
from stas.kernel.fake import FakeKernel
from stas.messages import DcRemoved, StafdAppeared, StafdSynced
from tests.helpers.connector import ConnectorHarness
from tests.helpers.entries import HOSTNQN, dc_tid, page

DC1, DC2 = dc_tid("::1"), dc_tid("::2")
SLOW = 10.0  # seconds one disconnect takes in the fake kernel


class SlowDeletes(FakeKernel):
    """Each disconnect takes ``SLOW`` s; counts how many overlap and when each ended.
    ``refuse``: devices whose disconnect fails (EBUSY) after the delay."""

    def __init__(self) -> None:
        super().__init__()
        self.disconnect_delay = SLOW
        self.in_flight = self.peak = 0
        self.ended: dict[str, float] = {}
        self.refuse: set[str] = set()

    async def disconnect(self, device: str) -> None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if device in self.refuse:
                await trio.sleep(self.disconnect_delay)
                self.disconnect_log.append(device)
                raise KernelError(f"disconnect {device}: Device or resource busy", errno.EBUSY)
            await super().disconnect(device)
        finally:
            self.in_flight -= 1
            self.ended[device] = trio.current_time()


class Stacd(ConnectorHarness):
    """The connector with the kernel's uevents forwarded to its inbox, as stacd wires it."""

    def __init__(self, kernel: FakeKernel, **kw: int) -> None:
        super().__init__(kernel=kernel, **kw)

    def devices(self, nqn: str) -> list[str]:
        return [c.device for c in self.kernel.controllers.values() if c.subsysnqn == nqn]


NQNS = [f"nqn.2026-01.io.zone:s{i}" for i in range(50)]


async def fifty_removed(stacd: Stacd) -> float:
    """50 subsystems connected, then zoning removes them all; returns when that began."""
    await stacd.put(page(DC1, *NQNS))
    assert set(stacd.shown()) == set(NQNS)
    t0 = trio.current_time()
    await stacd.put(page(DC1))
    return t0


async def test_fifty_removals_overlap_and_take_about_one_disconnect(autojump_clock) -> None:
    """On the old connector (one disconnect after another) this took 50 x 10 s."""
    kernel = SlowDeletes()
    stacd = Stacd(kernel, parallel_disconnects=64)
    async with trio.open_nursery() as n:
        await stacd.start(n)
        t0 = await fifty_removed(stacd)
        assert stacd.shown() == {}  # gone from ls at once: nothing half-shown meanwhile
        await trio.sleep(SLOW * 60)
        assert kernel.controllers == {} and sorted(kernel.disconnect_log) == sorted(
            f"nvme{i}" for i in range(50)
        )
        assert kernel.peak == 50
        assert max(kernel.ended.values()) - t0 == pytest.approx(SLOW)
        n.cancel_scope.cancel()


async def test_a_dc_gone_with_its_entries_disconnects_them_together(autojump_clock) -> None:
    kernel = SlowDeletes()
    stacd = Stacd(kernel, parallel_disconnects=64)
    async with trio.open_nursery() as n:
        await stacd.start(n)
        await stacd.put(page(DC1, *NQNS))
        t0 = trio.current_time()
        await stacd.put(DcRemoved(DC1))
        await trio.sleep(SLOW * 60)
        assert kernel.controllers == {} and kernel.peak == 50
        assert max(kernel.ended.values()) - t0 == pytest.approx(SLOW)
        n.cancel_scope.cancel()


async def test_the_restart_sweep_disconnects_its_orphans_together(autojump_clock, tmp_path) -> None:
    """50 controllers a previous run made (the registry says so), none listed any more."""
    kernel = SlowDeletes()
    seq = tmp_path / "seqnum"
    seq.write_text("7\n")
    registry = Registry(tmp_path / "registry", seqnum_file=seq)
    for nqn in NQNS:
        c = kernel.add_external(
            transport="tcp", traddr="::1", trsvcid="4420", subsysnqn=nqn, hostnqn=HOSTNQN,
            cntrltype="io",
        )  # fmt: skip
        registry.claim(c.device, fresh=True)
    stacd = Stacd(kernel, parallel_disconnects=64)
    stacd.connector.registry = registry
    async with trio.open_nursery() as n:
        await stacd.start(n)
        t0 = trio.current_time()
        await stacd.put(StafdAppeared(":1.5"), page(DC1), StafdSynced(()))
        await trio.sleep(SLOW * 60)
        assert kernel.controllers == {} and kernel.peak == 50
        assert max(kernel.ended.values()) - t0 == pytest.approx(SLOW)
        assert list(registry.root.iterdir()) == []  # each entry released after its delete
        n.cancel_scope.cancel()


async def test_the_default_bound_holds_and_the_connector_keeps_reacting(autojump_clock) -> None:
    kernel = SlowDeletes()
    stacd = Stacd(kernel)
    bound = connector_mod.PARALLEL_DISCONNECTS
    async with trio.open_nursery() as n:
        await stacd.start(n)
        t0 = await fifty_removed(stacd)
        await trio.sleep(1)
        new = "nqn.2026-01.io.zone:new"
        await stacd.put(page(DC2, new))  # while 50 disconnects run
        assert stacd.shown() == {new: stacd.devices(new)[0]}
        assert trio.current_time() - t0 < SLOW  # not after the disconnects
        await trio.sleep(SLOW * 60)
        assert set(kernel.state()) == {(new, "::1", "4420")}
        assert kernel.peak == bound and len(kernel.disconnect_log) == 50
        rounds = -(-50 // bound)
        assert max(kernel.ended.values()) - t0 == pytest.approx(rounds * SLOW)
        n.cancel_scope.cancel()


async def test_a_subsystem_back_during_its_disconnect_connects_after_it(autojump_clock) -> None:
    """Zoning removes b, then gives it back while its old controller is being deleted: the new
    connect waits for the delete (no EALREADY, no adopting the dying one), b ends with one
    controller (the kernel hands out the freed name again) and keeps it."""
    kernel = SlowDeletes()
    stacd = Stacd(kernel)
    async with trio.open_nursery() as n:
        await stacd.start(n)
        await stacd.put(page(DC1, "a", "b"))
        (old,) = stacd.devices("b")
        await stacd.put(page(DC1, "a"))
        await trio.sleep(1)
        await stacd.put(page(DC1, "a", "b"))
        assert "b" not in stacd.shown()  # not shown on the device being deleted
        assert [r.subsysnqn for r in kernel.connect_log].count("b") == 1  # not yet
        await trio.sleep(SLOW)
        assert kernel.disconnect_log == [old]
        connects = [r.subsysnqn for r in kernel.connect_log]
        assert connects.count("b") == 2
        (new,) = stacd.devices("b")
        assert stacd.shown() == {"a": stacd.devices("a")[0], "b": new}
        await trio.sleep(600)  # the old device's 'remove' came late: nothing bounces
        assert [r.subsysnqn for r in kernel.connect_log].count("b") == 2
        assert stacd.shown()["b"] == new == stacd.devices("b")[0]
        n.cancel_scope.cancel()


async def test_a_failed_disconnect_is_logged_once_and_left(autojump_clock, caplog) -> None:
    caplog.set_level(logging.INFO, "stas.connector")
    kernel = SlowDeletes()
    stacd = Stacd(kernel)
    async with trio.open_nursery() as n:
        await stacd.start(n)
        await stacd.put(page(DC1, "a", "b"))
        (dev,) = stacd.devices("b")
        kernel.refuse.add(dev)
        await stacd.put(page(DC1, "a"))
        await stacd.put(page(DC1, "a"), page(DC2))  # more pages: no second try meanwhile
        await trio.sleep(SLOW * 10)
        assert kernel.disconnect_log == [dev] and stacd.devices("b") == [dev]
        failed = [r for r in caplog.records if "disconnect failed" in r.message]
        assert len(failed) == 1 and dev in failed[0].message and "busy" in failed[0].message
        assert "b" not in stacd.shown()
        await stacd.put(page(DC1, "a", "b"))  # wanted again: the kernel kept it, adopted
        assert stacd.shown()["b"] == dev
        assert [r.subsysnqn for r in kernel.connect_log].count("b") == 1
        n.cancel_scope.cancel()
