"""stacd connector + IOC actors on the FakeKernel, under MockClock."""

from __future__ import annotations

import errno
import itertools
import logging

import pytest
import trio
import trio.testing
from trio_util import AsyncValue

from stas.actors import connector as connector_mod
from stas.actors.connector import run_connector
from stas.kernel.fake import FakeKernel
from stas.messages import (
    DcLogPages,
    DcRemoved,
    KernelResync,
    StacdConfigChanged,
    StacdSnapshot,
    StafdAppeared,
    StafdVanished,
)
from tests.helpers.connector import ConnectorHarness, external, stacd_config
from tests.helpers.entries import HOSTID, HOSTNQN, dc_tid, dlpe, page

DC1 = dc_tid("::1")
DC2 = dc_tid("::2")
SEED = (
    "klingons",
    "starfleet",
    "nqn.1988-11.com.dell:PowerSANxxx:01:20210225100113-454f73093ceb4847a7bdfc6e34ae8e28",
)
AUDIT = "all-connections-matching-disconnect-trtypes"


conf = stacd_config


Harness = ConnectorHarness


async def test_log_pages_connect_and_a_shrunk_page_disconnects(autojump_clock) -> None:
    h = Harness()
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(page(DC1, *SEED))
        assert h.connected() == set(SEED) and len(h.kernel.connect_log) == 3
        tids = [s.tid for s in h.published.value.iocs]
        assert tids == sorted(tids)  # the snapshot is in Tid order
        req = h.kernel.connect_log[0]
        assert (req.hostnqn, req.hostid, req.kato) == (HOSTNQN, HOSTID, None)  # stacd: no kato
        dev = h.device("klingons")
        await h.put(page(DC1, *SEED[1:]))
        assert h.connected() == set(SEED[1:]) and h.kernel.disconnect_log == [dev]
        assert ("klingons", "::1", "4420") not in h.kernel.state()
        assert len(h.kernel.connect_log) == 3
        n.cancel_scope.cancel()


async def test_run_connector_function(autojump_clock) -> None:
    kernel = FakeKernel()
    published = AsyncValue(StacdSnapshot())
    _send, receive = trio.open_memory_channel(10)
    config = conf("[Controllers]\ncontroller=transport=tcp;traddr=10.0.0.9;trsvcid=4420;nqn=vol\n")
    async with trio.open_nursery() as n:
        await n.start(
            lambda task_status: run_connector(
                config=config,
                host_nqn=HOSTNQN,
                hostid=HOSTID,
                kernel=kernel,
                inbox=receive,
                published=published,
                task_status=task_status,
            )
        )
        await trio.testing.wait_all_tasks_blocked()
        (s,) = published.value.iocs
        assert s.connected and s.origin == "configured" and len(kernel.connect_log) == 1
        n.cancel_scope.cancel()


async def test_stafd_away_for_30_minutes_disconnects_nothing(autojump_clock) -> None:
    for scope in ("only-stas-connections", AUDIT):
        h = Harness(conf(f"[I/O controller connection management]\ndisconnect-scope={scope}\n"))
        async with trio.open_nursery() as n:
            await h.start(n)
            await h.put(StafdAppeared(":1.7"), page(DC1, *SEED))
            await h.put(StafdVanished())
            await trio.sleep(30 * 60)
            assert h.kernel.disconnect_log == [] and h.connected() == set(SEED), scope
            await h.put(StafdAppeared(":1.7"))
            assert h.kernel.disconnect_log == [] and h.connected() == set(SEED), scope
            n.cancel_scope.cancel()


async def test_dc_gone_disconnects_only_what_it_alone_listed(autojump_clock) -> None:
    h = Harness()
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(page(DC1, "klingons", "starfleet"), page(DC2, "starfleet"))
        dev = h.device("klingons")
        await h.put(DcRemoved(DC1))
        assert h.connected() == {"starfleet"} and h.kernel.disconnect_log == [dev]
        (s,) = h.published.value.iocs
        assert s.tid.subsysnqn == "starfleet"
        n.cancel_scope.cancel()


async def test_warm_restart_adopts_everything(autojump_clock) -> None:
    kernel = FakeKernel()
    for nqn in SEED:
        external(kernel, nqn)
    h = Harness(kernel=kernel)
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(page(DC1, *SEED))
        await trio.sleep(120)
        assert h.connected() == set(SEED)
        assert kernel.connect_log == [] and kernel.disconnect_log == []
        assert all(s.adopted for s in h.published.value.iocs)
        n.cancel_scope.cancel()


async def test_warm_restart_of_configured_controllers(autojump_clock) -> None:
    kernel = FakeKernel()
    ext = external(kernel, "vol", "10.0.0.9")
    h = Harness(
        conf("[Controllers]\ncontroller=transport=tcp;traddr=10.0.0.9;trsvcid=4420;nqn=vol\n"),
        kernel,
    )
    async with trio.open_nursery() as n:
        await h.start(n)  # adopted before stafd says anything
        (s,) = h.published.value.iocs
        assert (s.device, s.adopted, s.connected) == (ext.device, True, True)
        assert kernel.connect_log == []
        n.cancel_scope.cancel()


async def test_retry_timing(autojump_clock) -> None:
    h = Harness(
        conf("[Controllers]\ncontroller=transport=tcp;traddr=10.0.0.9;trsvcid=4420;nqn=vol\n")
    )
    h.kernel.fail_next(errno.ECONNREFUSED, n=7, text="connection refused")
    times = []
    orig = h.kernel.connect

    async def timed(req):
        times.append(trio.current_time())
        return await orig(req)

    h.kernel.connect = timed  # type: ignore[method-assign]
    async with trio.open_nursery() as n:
        await h.start(n)
        await trio.sleep(250)
        gaps = [round(b - a, 3) for a, b in itertools.pairwise(times)]
        assert gaps == [3.0, 5.0, 10.0, 20.0, 40.0, 60.0, 60.0]
        assert h.connected() == {"vol"}
        n.cancel_scope.cancel()


async def test_ncc_gives_up_then_resumes_when_the_page_clears_it(autojump_clock) -> None:
    h = Harness(conf("[I/O controller connection management]\nconnect-attempts-on-ncc=2\n"))
    h.kernel.fail_next(errno.ECONNREFUSED, n=100, when=lambda r: r.subsysnqn == "klingons")
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(DcLogPages(DC1, (dlpe("klingons", eflags="4"),)))
        await trio.sleep(600)
        (status,) = h.published.value.iocs
        assert status.state == "gave-up" and status.ncc and len(h.kernel.connect_log) == 2
        h.kernel.failures.clear()
        await h.put(DcLogPages(DC1, (dlpe("klingons", eflags="0"),)))
        assert h.connected() == {"klingons"} and len(h.kernel.connect_log) == 3
        assert not h.published.value.iocs[0].ncc
        n.cancel_scope.cancel()


async def test_kernel_removal_reconnects_after_fast_retry(autojump_clock) -> None:
    h = Harness()
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(page(DC1, "klingons"))
        h.kernel.remove("nvme0")  # ctrl-loss-tmo expired: a 'remove' uevent
        await trio.testing.wait_all_tasks_blocked()
        assert h.connected() == set()
        await trio.sleep(3.1)
        assert h.connected() == {"klingons"} and len(h.kernel.connect_log) == 2
        assert h.kernel.disconnect_log == []
        n.cancel_scope.cancel()


async def test_a_lost_uevent_is_caught_by_the_resync(autojump_clock) -> None:
    h = Harness(uevents=False)
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(page(DC1, "klingons"))
        h.kernel.remove(h.device("klingons"))  # nobody hears the 'remove'
        await h.put(KernelResync(tuple(await h.kernel.list_controllers())))
        await trio.sleep(3.1)
        assert h.connected() == {"klingons"} and len(h.kernel.connect_log) == 2
        n.cancel_scope.cancel()


async def test_an_unknown_message_is_logged_and_ignored(autojump_clock, caplog) -> None:
    h = Harness()
    async with trio.open_nursery() as n:
        await h.start(n)
        with caplog.at_level(logging.DEBUG, logger="stas.connector"):
            await h.put("not a message", page(DC1, "klingons"))
        assert "connector: ignoring 'not a message'" in caplog.text
        assert h.connected() == {"klingons"}  # the next message is still handled
        n.cancel_scope.cancel()


async def test_disconnect_scopes(autojump_clock) -> None:
    for scope, external_gone, klingons_kept in [
        ("only-stas-connections", False, False),
        (AUDIT, True, False),
        ("no-disconnect", False, True),
    ]:
        kernel = FakeKernel()
        ext = external(kernel, "nvme-cli-made", "10.9.9.9")
        h = Harness(
            conf(f"[I/O controller connection management]\ndisconnect-scope={scope}\n"), kernel
        )
        async with trio.open_nursery() as n:
            await h.start(n)
            await h.put(page(DC1, "klingons", "starfleet"))
            await trio.sleep(5)  # past the audit's settle time
            await h.put(page(DC1, "starfleet"))
            await trio.sleep(120)
            nqns = {c.subsysnqn for c in kernel.controllers.values()}
            assert (ext.subsysnqn not in nqns) == external_gone, scope
            assert ("klingons" in nqns) == klingons_kept, scope
            assert "starfleet" in nqns
            n.cancel_scope.cancel()


async def test_audit_waits_for_stafd_data(autojump_clock) -> None:
    """An IOC that stafd will list is not audited away just because stafd is still starting."""
    kernel = FakeKernel()
    external(kernel, "klingons")
    cli = external(kernel, "cli-made", "10.9.9.9")
    h = Harness(conf(f"[I/O controller connection management]\ndisconnect-scope={AUDIT}\n"), kernel)
    async with trio.open_nursery() as n:
        await h.start(n)
        await trio.sleep(30)  # stafd not there yet: nothing is audited
        assert kernel.disconnect_log == []
        await h.put(page(DC1, "klingons"))
        await trio.sleep(2)
        assert kernel.disconnect_log == [cli.device] and h.connected() == {"klingons"}
        late = external(kernel, "later-cli", "10.9.9.8")  # an 'add' uevent: audited after 1 s
        await trio.sleep(2)
        assert kernel.disconnect_log == [cli.device, late.device]
        n.cancel_scope.cancel()


async def test_audit_without_stafd_starts_after_the_grace(autojump_clock) -> None:
    kernel = FakeKernel()
    cli = external(kernel, "cli-made", "10.9.9.9")
    h = Harness(conf(f"[I/O controller connection management]\ndisconnect-scope={AUDIT}\n"), kernel)
    async with trio.open_nursery() as n:
        await h.start(n)
        await trio.sleep(59)
        assert kernel.disconnect_log == []
        await trio.sleep(2)
        assert kernel.disconnect_log == [cli.device]
        n.cancel_scope.cancel()


async def test_exclusion_on_reload_disconnects(autojump_clock) -> None:
    h = Harness()
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(page(DC1, *SEED))
        dev = h.device("klingons")
        await h.put(StacdConfigChanged(conf("[Controllers]\nexclude=nqn=klingons\n")))
        assert h.connected() == set(SEED) - {"klingons"} and h.kernel.disconnect_log == [dev]
        n.cancel_scope.cancel()


async def test_reload_changes_params_without_reconnecting(autojump_clock) -> None:
    h = Harness()
    h.kernel.fail_next(errno.ECONNREFUSED, n=1, when=lambda r: r.subsysnqn == "starfleet")
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(page(DC1, "klingons", "starfleet"))
        await h.put(StacdConfigChanged(conf("[Global]\nkato=7\n")))
        await trio.sleep(4)
        assert h.connected() == {"klingons", "starfleet"}
        assert sorted((r.subsysnqn, r.kato or 0) for r in h.kernel.connect_log) == [
            ("klingons", 0),
            ("starfleet", 0),
            ("starfleet", 7),  # the retry uses the new [Global] value
        ]
        assert h.kernel.disconnect_log == []
        n.cancel_scope.cancel()


async def test_hostile_log_page_entries_never_reach_the_kernel(autojump_clock) -> None:
    h = Harness()
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(
            DcLogPages(
                DC1, (dlpe("evil,hostnqn=nqn.x"), dlpe("ok", traddr="1.2.3.4,x"), dlpe("fine"))
            )
        )
        assert [r.subsysnqn for r in h.kernel.connect_log] == ["fine"]
        n.cancel_scope.cancel()


async def test_scale_one_dc_change_is_proportional(autojump_clock) -> None:
    h = Harness()
    dcs = [dc_tid(f"fd00::{i + 1:x}") for i in range(100)]
    pages = {
        dc: tuple(dlpe(f"nqn.2026-01.io.scale:dc{i}-sub{j}", traddr=dc.traddr) for j in range(100))
        for i, dc in enumerate(dcs)
    }
    async with trio.open_nursery() as n:
        await h.start(n)
        for dc in dcs:
            h.send.send_nowait(DcLogPages(dc, pages[dc]))
        await trio.testing.wait_all_tasks_blocked()
        assert len(h.published.value.iocs) == 10_000 and len(h.kernel.connect_log) == 10_000
        assert sum(s.connected for s in h.published.value.iocs) == 10_000
        before = h.connector.evaluations
        await h.put(DcLogPages(dcs[42], pages[dcs[42]][1:]))
        # work, not wall-clock time: one DC's 100 entries re-evaluated, not all 10,000
        assert h.connector.evaluations - before == 100
        assert len(h.kernel.disconnect_log) == 1 and len(h.kernel.connect_log) == 10_000
        assert len(h.published.value.iocs) == 9_999
        n.cancel_scope.cancel()


class CountingKernel(FakeKernel):
    """FakeKernel that counts full scans, device reads and connects in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.scans = self.reads = self.in_flight = self.peak = 0
        self.finished: list[float] = []

    async def list_controllers(self):
        self.scans += 1
        return await super().list_controllers()

    async def controller(self, device):
        self.reads += 1
        return await super().controller(device)

    async def connect(self, req):
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            return await super().connect(req)
        finally:
            self.in_flight -= 1
            self.finished.append(trio.current_time())


async def test_connects_run_in_parallel_never_more_than_the_bound(autojump_clock) -> None:
    """50 connects of 1 s each, 8 at a time: all up after 7 s, never 9 in the kernel."""
    kernel = CountingKernel()
    kernel.delay = 1.0
    h = Harness(kernel=kernel)
    nqns = [f"nqn.2026-01.io.par:s{i}" for i in range(50)]
    async with trio.open_nursery() as n:
        await h.start(n)
        t0 = trio.current_time()
        await h.put(page(DC1, *nqns))
        await trio.sleep(60)
        assert h.connected() == set(nqns) and len(kernel.connect_log) == 50
        assert kernel.peak == 8
        assert max(kernel.finished) - t0 == pytest.approx(7.0)  # ceil(50 / 8) rounds of 1 s
        n.cancel_scope.cancel()


async def test_parallel_connects_bound_is_configurable(autojump_clock) -> None:
    kernel = CountingKernel()
    kernel.delay = 1.0
    h = Harness(kernel=kernel)
    h.connector.connect_limiter = trio.CapacityLimiter(1)
    async with trio.open_nursery() as n:
        await h.start(n)
        t0 = trio.current_time()
        await h.put(page(DC1, *SEED))
        await trio.sleep(60)
        assert kernel.peak == 1 and max(kernel.finished) - t0 == pytest.approx(3.0)
        n.cancel_scope.cancel()


async def cold_start_reads(n_subsystems: int) -> tuple[int, float]:
    """(full kernel scans, single-device reads per connect) for one cold start."""
    kernel = CountingKernel()
    h = Harness(kernel=kernel)
    nqns = [f"nqn.2026-01.io.lin:s{i}" for i in range(n_subsystems)]
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(page(DC1, *nqns))
        assert h.connected() == set(nqns)
        n.cancel_scope.cancel()
    return kernel.scans, kernel.reads / n_subsystems


async def test_cold_start_scans_the_kernel_once_then_reads_only_new_devices(autojump_clock) -> None:
    assert await cold_start_reads(10) == await cold_start_reads(100) == (1, 1.0)


class GatedKernel(FakeKernel):
    """Disconnects wait for ``gate``: the connector is stuck inside one."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = trio.Event()

    async def disconnect(self, device):
        await self.gate.wait()
        await super().disconnect(device)


async def test_a_stuck_connector_pushes_back_instead_of_buffering_without_limit(
    autojump_clock,
) -> None:
    kernel = GatedKernel()
    h = Harness(kernel=kernel, inbox=10)
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(page(DC1, *SEED))
        await h.put(page(DC1, *SEED[1:]))  # the connector is now stuck in a disconnect
        accepted = 0
        for _ in range(5_000):
            try:
                h.send.send_nowait(StafdAppeared(":1.7"))
            except trio.WouldBlock:
                break
            accepted += 1
        assert accepted <= 10 + connector_mod.MERGED_BUFFER + 1  # bounded: the rest must wait
        kernel.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert h.connected() == set(SEED[1:]) and kernel.state() == {
            (nqn, "::1", "4420") for nqn in SEED[1:]
        }
        n.cancel_scope.cancel()


async def test_an_actor_whose_mailbox_overflows_is_restarted_from_the_connectors_view(
    autojump_clock,
) -> None:
    kernel = CountingKernel()
    kernel.delay = 100.0  # the actor sits in a connect and reads no mail
    h = Harness(kernel=kernel)
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(page(DC1, "klingons"))
        for i in range(connector_mod.ACTOR_EVENTS + 5):  # NCC toggles: one WantedChanged each
            await h.put(DcLogPages(DC1, (dlpe("klingons", eflags="4" if i % 2 else "0"),)))
        await h.put(DcLogPages(DC1, (dlpe("klingons", eflags="4"),)))
        assert h.connector.restarts >= 1
        await trio.sleep(300)
        (status,) = h.published.value.iocs
        assert status.connected and status.ncc  # the last page's NCC, nothing missed
        assert len(kernel.controllers) == 1 and kernel.peak == 1
        n.cancel_scope.cancel()


async def test_snapshot_carries_the_log_page_entry_of_each_ioc(autojump_clock) -> None:
    """upstream's ``ls -d`` shows ``dlpe`` for I/O controllers: the entry that listed it."""
    h = Harness(conf("[Controllers]\ncontroller=transport=tcp;traddr=::1;nqn=configured-only\n"))
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(page(DC1, "klingons"))
        by_nqn = {s.tid.subsysnqn: s for s in h.published.value.iocs}
        assert by_nqn["klingons"].connected
        assert dict(by_nqn["klingons"].dlpe) == dlpe("klingons")
        assert dict(by_nqn["configured-only"].dlpe) == {}
        n.cancel_scope.cancel()


# --- a connect the kernel made while its actor was being stopped ------------------------------


class StoppedAfterConnect(FakeKernel):
    """The connect of ``nqn`` returns only once ``hook`` is done (shielded: the hook sends the
    connector a page that drops ``nqn`` and waits until its actor is stopped). So the actor is
    cancelled right after the kernel made the device, before its 'connected' status is sent:
    the window of the flaky 10,000-signal test (an extra controller left in the kernel)."""

    def __init__(self, nqn: str) -> None:
        super().__init__()
        self.nqn = nqn
        self.hook = None

    async def connect(self, req):
        ctrl = await super().connect(req)
        if req.subsysnqn == self.nqn and self.hook is not None:
            hook, self.hook = self.hook, None
            with trio.CancelScope(shield=True):
                await hook()
        return ctrl


def drop_then(h: Harness, nqn: str, *after: DcLogPages):
    """The hook: a page without ``nqn``, wait until its actor is stopped, then ``after``."""

    async def hook() -> None:
        await h.send.send(page(DC1, "a"))
        while any(t.subsysnqn == nqn for t in h.connector.state.actors):
            await trio.sleep(0.01)
        await trio.sleep(0.01)  # the shell cancels the actor in the same step
        for msg in after:
            await h.send.send(msg)

    return hook


async def test_a_connect_made_while_its_actor_stopped_is_disconnected(autojump_clock) -> None:
    kernel = StoppedAfterConnect("b2")
    h = Harness(kernel=kernel)
    kernel.hook = drop_then(h, "b2")
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(page(DC1, "a", "b2"))
        await trio.sleep(10)
        assert kernel.hook is None  # the window was hit
        assert kernel.state() == {("a", "::1", "4420")}  # no b2 left behind
        assert h.connected() == {"a"}
        n.cancel_scope.cancel()


async def test_a_connect_made_while_its_actor_stopped_is_kept_and_claimed_if_scope_says_so(
    autojump_clock, tmp_path
) -> None:
    """disconnect-scope=no-disconnect keeps it, but as stacd's: the registry says so (a restart
    sweep, or a later scope, can then remove it)."""
    from stas.coexist.registry import Registry

    kernel = StoppedAfterConnect("b2")
    h = Harness(
        conf("[I/O controller connection management]\ndisconnect-scope=no-disconnect\n"),
        kernel=kernel,
    )
    seq = tmp_path / "seqnum"
    seq.write_text("7\n")
    h.connector.registry = registry = Registry(tmp_path / "registry", seqnum_file=seq)
    kernel.hook = drop_then(h, "b2")
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(page(DC1, "a", "b2"))
        await trio.sleep(10)
        assert kernel.hook is None
        (b2,) = (c.device for c in kernel.controllers.values() if c.subsysnqn == "b2")
        assert registry.owner(b2) == "stas"
        assert h.connected() == {"a"}
        n.cancel_scope.cancel()


async def test_a_connect_made_while_its_actor_stopped_then_wanted_again_ends_connected_once(
    autojump_clock,
) -> None:
    """The page wanting it again arrives after the stop (the connector waits for the actor to
    end, so its last word comes first): gone, then connected again, one controller."""
    kernel = StoppedAfterConnect("b2")
    h = Harness(kernel=kernel)
    kernel.hook = drop_then(h, "b2", page(DC1, "a", "b2"))
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(page(DC1, "a", "b2"))
        await trio.sleep(10)
        assert kernel.hook is None
        assert kernel.state() == {("a", "::1", "4420"), ("b2", "::1", "4420")}
        assert h.connected() == {"a", "b2"}
        (b2,) = (c.device for c in kernel.controllers.values() if c.subsysnqn == "b2")
        assert h.device("b2") == b2
        n.cancel_scope.cancel()


async def test_a_connect_made_as_stacd_stops_is_claimed_for_the_next_runs_sweep(
    autojump_clock, tmp_path
) -> None:
    """stacd stops right after the kernel made ``b2``, before its status reached the core:
    the registry still says stacd made it, so a restarted stacd can remove it if unwanted."""
    from stas.coexist.registry import Registry

    kernel = StoppedAfterConnect("b2")
    h = Harness(kernel=kernel)
    seq = tmp_path / "seqnum"
    seq.write_text("7\n")
    h.connector.registry = registry = Registry(tmp_path / "registry", seqnum_file=seq)
    async with trio.open_nursery() as n:

        async def stop_stacd() -> None:
            n.cancel_scope.cancel()

        kernel.hook = stop_stacd
        await h.start(n)
        await h.put(page(DC1, "a", "b2"))
    assert kernel.hook is None
    (b2,) = (c.device for c in kernel.controllers.values() if c.subsysnqn == "b2")
    assert registry.owner(b2) == "stas"
    assert registry.claimed_before([b2]) == {b2}
