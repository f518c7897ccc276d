"""stacd connector + IOC actors on the FakeKernel, under MockClock."""

from __future__ import annotations

import errno
import itertools
import time

import trio
import trio.testing
from trio_util import AsyncValue

from stas.actors.connector import Connector, StacdConfigChanged
from stas.actors.ioc import IocSettings
from stas.config import parse_service_config
from stas.kernel.fake import FakeKernel
from stas.messages import DcGone, DcLogPages, KernelResync, StacdSnapshot, StafdPresence, Tid
from stas.plan import configured_iocs, decide, format_plan, iocs_of_dc, merge

HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7f10"
HOSTID = "0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7f10"
WK = "nqn.2014-08.org.nvmexpress.discovery"
DC1 = Tid("tcp", "::1", "8009", WK, "", "", HOSTNQN)
DC2 = Tid("tcp", "::2", "8009", WK, "", "", HOSTNQN)
SEED = (
    "klingons",
    "starfleet",
    "nqn.1988-11.com.dell:PowerSANxxx:01:20210225100113-454f73093ceb4847a7bdfc6e34ae8e28",
)


def dlpe(nqn: str, traddr: str = "::1", eflags: str = "0", trsvcid: str = "4420") -> dict[str, str]:
    return {
        "trtype": "tcp",
        "adrfam": "ipv6" if ":" in traddr else "ipv4",
        "traddr": traddr,
        "trsvcid": trsvcid,
        "subnqn": nqn,
        "subtype": "nvme",
        "eflags": eflags,
    }


def conf(text: str = ""):
    config, warnings = parse_service_config(text, "stacd")
    assert warnings == []
    return config


class Harness:
    def __init__(self, config=None, kernel: FakeKernel | None = None) -> None:
        self.kernel = kernel or FakeKernel()
        self.published = AsyncValue(StacdSnapshot())
        self.send, self.receive = trio.open_memory_channel(100_000)
        self.connector = Connector(
            config=config or conf(),
            host_nqn=HOSTNQN,
            hostid=HOSTID,
            kernel=self.kernel,
            published=self.published,
            settings=IocSettings(jitter=0.0),
        )

    async def start(self, nursery) -> None:
        await nursery.start(self.connector.run, self.receive, self.send)

    async def put(self, *msgs) -> None:
        for m in msgs:
            await self.send.send(m)
        await trio.testing.wait_all_tasks_blocked()

    def connected(self) -> set[str]:
        return {s.tid.subsysnqn for s in self.published.value.iocs if s.connected}


async def test_log_pages_connect_and_zoning_disconnects(autojump_clock) -> None:
    h = Harness()
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(DcLogPages(DC1, tuple(dlpe(x) for x in SEED)))
        assert h.connected() == set(SEED) and len(h.kernel.connect_log) == 3
        dev = next(s.device for s in h.published.value.iocs if s.tid.subsysnqn == "klingons")
        await h.put(DcLogPages(DC1, tuple(dlpe(x) for x in SEED[1:])))
        assert h.connected() == set(SEED[1:])
        assert (
            h.kernel.disconnect_log == [dev] and ("klingons", "::1", "4420") not in h.kernel.state()
        )
        assert len(h.kernel.connect_log) == 3
        n.cancel_scope.cancel()


async def test_stafd_away_for_minutes_disconnects_nothing(autojump_clock) -> None:
    h = Harness()
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(StafdPresence(True), DcLogPages(DC1, tuple(dlpe(x) for x in SEED)))
        await h.put(StafdPresence(False))
        await trio.sleep(30 * 60)
        await h.put(StafdPresence(True))
        assert h.kernel.disconnect_log == [] and h.connected() == set(SEED)
        n.cancel_scope.cancel()


async def test_dc_gone_disconnects_only_what_it_alone_listed(autojump_clock) -> None:
    h = Harness()
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(
            DcLogPages(DC1, (dlpe("klingons"), dlpe("starfleet"))),
            DcLogPages(DC2, (dlpe("starfleet"),)),
        )
        await h.put(DcGone(DC1))
        assert h.connected() == {"starfleet"} and len(h.kernel.disconnect_log) == 1
        n.cancel_scope.cancel()


async def test_warm_restart_adopts_everything(autojump_clock) -> None:
    kernel = FakeKernel()
    for nqn in SEED:
        kernel.add_external(
            transport="tcp",
            traddr="::1",
            trsvcid="4420",
            subsysnqn=nqn,
            hostnqn=HOSTNQN,
            cntrltype="io",
        )
    h = Harness(kernel=kernel)
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(DcLogPages(DC1, tuple(dlpe(x) for x in SEED)))
        assert h.connected() == set(SEED)
        assert kernel.connect_log == [] and kernel.disconnect_log == []
        assert all(s.adopted for s in h.published.value.iocs)
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

    h.kernel.connect = timed
    async with trio.open_nursery() as n:
        await h.start(n)
        await trio.sleep(200)
        gaps = [round(b - a, 3) for a, b in itertools.pairwise(times)]
        assert gaps == [3.0, 5.0, 10.0, 20.0, 40.0, 60.0, 60.0]
        assert h.connected() == {"vol"}
        n.cancel_scope.cancel()


async def test_ncc_gives_up_then_resumes(autojump_clock) -> None:
    h = Harness(conf("[I/O controller connection management]\nconnect-attempts-on-ncc=2\n"))
    h.kernel.fail_next(errno.ECONNREFUSED, n=100, when=lambda r: r.subsysnqn == "klingons")
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(DcLogPages(DC1, (dlpe("klingons", eflags="4"),)))
        await trio.sleep(600)
        (status,) = h.published.value.iocs
        assert status.state == "gave-up" and len(h.kernel.connect_log) == 2
        h.kernel.failures.clear()
        await h.put(DcLogPages(DC1, (dlpe("klingons", eflags="0"),)))
        assert h.connected() == {"klingons"}
        n.cancel_scope.cancel()


async def test_kernel_removal_reconnects_after_fast_retry(autojump_clock) -> None:
    h = Harness()
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(DcLogPages(DC1, (dlpe("klingons"),)))
        h.kernel.remove("nvme0")
        await h.put(
            h.kernel.events.receive_nowait(), h.kernel.events.receive_nowait()
        )  # add, remove
        assert h.connected() == set()
        await trio.sleep(3.1)
        assert h.connected() == {"klingons"} and len(h.kernel.connect_log) == 2
        (dev,) = h.kernel.controllers
        await h.put(h.kernel.events.receive_nowait())  # the reconnect's own 'add'
        h.kernel.remove(dev)
        h.kernel.events.receive_nowait()  # this 'remove' is lost: only the resync tells
        await h.put(KernelResync(()))
        await trio.sleep(3.1)
        assert h.connected() == {"klingons"} and len(h.kernel.connect_log) == 3
        n.cancel_scope.cancel()


async def test_disconnect_scopes(autojump_clock) -> None:
    for scope, expect_external_gone, expect_klingons_kept in [
        ("only-stas-connections", False, False),
        ("all-connections-matching-disconnect-trtypes", True, False),
        ("no-disconnect", False, True),
    ]:
        kernel = FakeKernel()
        ext = kernel.add_external(
            transport="tcp",
            traddr="10.9.9.9",
            trsvcid="4420",
            subsysnqn="nvme-cli-made",
            hostnqn=HOSTNQN,
            cntrltype="io",
        )
        h = Harness(
            conf(f"[I/O controller connection management]\ndisconnect-scope={scope}\n"), kernel
        )
        async with trio.open_nursery() as n:
            await h.start(n)
            await h.put(DcLogPages(DC1, (dlpe("klingons"), dlpe("starfleet"))))
            await h.put(DcLogPages(DC1, (dlpe("starfleet"),)))
            gone = all(c.subsysnqn != ext.subsysnqn for c in kernel.controllers.values())
            assert gone == expect_external_gone, scope
            still = any(c.subsysnqn == "klingons" for c in kernel.controllers.values())
            assert still == expect_klingons_kept, scope
            n.cancel_scope.cancel()


async def test_exclusion_on_reload_disconnects(autojump_clock) -> None:
    h = Harness()
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(DcLogPages(DC1, tuple(dlpe(x) for x in SEED)))
        new = conf("[Controllers]\nexclude=nqn=klingons\n")
        await h.put(StacdConfigChanged(new, HOSTNQN, HOSTID))
        assert h.connected() == set(SEED) - {"klingons"} and len(h.kernel.disconnect_log) == 1
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
    dcs = [Tid("tcp", f"fd00::{i + 1:x}", "8009", WK, "", "", HOSTNQN) for i in range(100)]
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
        before = h.connector.evaluations
        t0 = time.perf_counter()
        await h.put(DcLogPages(dcs[42], pages[dcs[42]][1:]))
        elapsed = time.perf_counter() - t0
        assert h.connector.evaluations - before == 100
        assert len(h.kernel.disconnect_log) == 1 and len(h.kernel.connect_log) == 10_000
        assert elapsed < 2.0
        n.cancel_scope.cancel()


def test_plan_text_for_a_mixed_case() -> None:
    config = conf("[Controllers]\ncontroller=transport=tcp;traddr=10.0.0.9;trsvcid=4420;nqn=vol\n")
    configured = configured_iocs(config, HOSTNQN)
    listing: dict = {}
    for tid, ncc in iocs_of_dc(
        DC1, [dlpe("klingons"), dlpe("starfleet")], ignore_iface=False, warned=set()
    ).items():
        listing.setdefault(tid, {})[DC1] = ncc
    wanted = {t: w for t in {*configured, *listing} if (w := merge(t, configured, listing, config))}
    kernel = FakeKernel()
    k = kernel.add_external(
        transport="tcp",
        traddr="::1",
        trsvcid="4420",
        subsysnqn="klingons",
        hostnqn=HOSTNQN,
        cntrltype="io",
    )
    old = kernel.add_external(
        transport="tcp",
        traddr="::1",
        trsvcid="4420",
        subsysnqn="gone",
        hostnqn=HOSTNQN,
        cntrltype="io",
    )
    managed = {Tid("tcp", "::1", "4420", "gone", "", "", HOSTNQN): old.device}
    text = format_plan(decide(wanted, managed, list(kernel.controllers.values()), config))
    assert text.splitlines() == [
        "connect     (tcp, 10.0.0.9, 4420, vol)  <- configured in stacd.conf",
        f"connect     (tcp, ::1, 4420, starfleet)  <- listed by DC {DC1}",
        f"keep        (tcp, ::1, 4420, klingons) as {k.device}  <- listed by DC {DC1}",
        f"disconnect  {old.device} (tcp, ::1, 4420, gone)  <- no longer wanted; "
        "disconnect-scope=only-stas-connections",
    ]
