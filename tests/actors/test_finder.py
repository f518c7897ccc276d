"""Finder: wanted-set decisions, removal policy, referrals, coalescing, warm restart."""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing
from trio_util import AsyncValue

from stas.actors.finder import ConfigChanged, Finder
from stas.config import parse_service_config
from stas.messages import DcStatus, DcUpdate, MdnsServiceDown, MdnsServiceUp, StafdSnapshot, Tid
from stas.nvme.logpage import LogPageEntry
from stas.resolve import resolve_traddr
from stas.state import StateStore

HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-4333-8444-555555555555"
WK = "nqn.2014-08.org.nvmexpress.discovery"


def conf(text: str):
    config, warnings = parse_service_config(text, "stafd")
    assert warnings == []
    return config


def tid(addr: str, port: str = "8009", iface: str = "") -> Tid:
    return Tid("tcp", addr, port, WK, "", iface, HOSTNQN)


def referral(addr: str, port: str = "8009") -> LogPageEntry:
    return LogPageEntry(
        trtype=3,
        adrfam=1 if "." in addr else 2,
        subtype=1,
        treq=0,
        portid=1,
        cntlid=0xFFFF,
        asqsz=32,
        eflags=0,
        trsvcid=port,
        subnqn=WK,
        traddr=addr,
    )


class Harness:
    """A finder with fake DC actors that record starts/stops and never connect by themselves."""

    def __init__(self, config, *, store: StateStore | None = None, probe=None) -> None:
        self.started: list[tuple[Tid, str, DcStatus | None]] = []
        self.stopped: list[Tid] = []
        self.published = AsyncValue(StafdSnapshot())
        self.send, self.receive = trio.open_memory_channel(1000)

        async def factory(wanted, updates, initial) -> None:
            self.started.append((wanted.tid, wanted.origin, initial))
            try:
                await trio.sleep_forever()
            finally:
                self.stopped.append(wanted.tid)

        async def refuse_all(addr: str, port: int, iface: str) -> None:
            raise OSError("refused")

        self.finder = Finder(
            config=config,
            host_nqn=HOSTNQN,
            dc_factory=factory,
            published=self.published,
            state_store=store,
            probe=probe or refuse_all,
        )

    async def start(self, nursery: trio.Nursery) -> None:
        await nursery.start(self.finder.run, self.receive, self.send)

    async def put(self, *msgs) -> None:
        for m in msgs:
            await self.send.send(m)
        await trio.testing.wait_all_tasks_blocked()

    @property
    def running(self) -> set[Tid]:
        return set(self.finder.running)

    def origin(self, t: Tid) -> str:
        return self.finder.running[t].origin


async def test_configured_dcs_start_and_exclusion_wins(autojump_clock) -> None:
    h = Harness(
        conf(
            "[Controllers]\ncontroller=transport=tcp;traddr=10.0.0.1\n"
            "controller=transport=tcp;traddr=10.0.0.2\nexclude=traddr=10.0.0.2\n"
        )
    )
    async with trio.open_nursery() as n:
        await h.start(n)
        await trio.testing.wait_all_tasks_blocked()
        assert h.running == {tid("10.0.0.1")}
        assert h.published.value.dcs[0].tid == tid("10.0.0.1")
        assert h.published.value.dcs[0].origin == "configured"
        n.cancel_scope.cancel()


async def test_ip_family_filters_addresses(autojump_clock) -> None:
    h = Harness(
        conf(
            "[Global]\nip-family=ipv6\n[Controllers]\n"
            "controller=transport=tcp;traddr=10.0.0.1\ncontroller=transport=tcp;traddr=fd00::9\n"
        )
    )
    async with trio.open_nursery() as n:
        await h.start(n)
        await trio.testing.wait_all_tasks_blocked()
        assert h.running == {tid("fd00::9")}
        n.cancel_scope.cancel()


async def test_localhost_resolves_to_both_loopbacks_without_hosts_entry() -> None:
    async def no_dns(name: str):
        raise OSError("no DNS here")

    assert await resolve_traddr("localhost", ip_family=(4, 6), resolver=no_dns) == [
        "127.0.0.1",
        "::1",
    ]
    assert await resolve_traddr("localhost", ip_family=(6,)) == ["::1"]
    assert await resolve_traddr("::ffff:10.1.2.3", ip_family=(4,)) == ["10.1.2.3"]
    assert await resolve_traddr("nope.invalid", ip_family=(4, 6), resolver=no_dns) == []


async def test_hostname_uses_the_address_that_answers(autojump_clock) -> None:
    async def only_v6(addr: str, port: int, iface: str) -> None:
        if addr != "::1":
            raise OSError("refused")

    h = Harness(conf("[Controllers]\ncontroller=transport=tcp;traddr=localhost\n"), probe=only_v6)
    async with trio.open_nursery() as n:
        await h.start(n)
        await trio.testing.wait_all_tasks_blocked()
        assert h.running == {tid("::1")}
        n.cancel_scope.cancel()


async def test_mdns_dc_is_kept_while_connected_and_dropped_after_persistence(
    autojump_clock,
) -> None:
    h = Harness(
        conf("[Discovery controller connection management]\nzeroconf-connections-persistence=100\n")
    )
    t = tid("192.168.1.5", iface="eth0")
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(MdnsServiceUp("eth0|svc|192.168.1.5", t))
        assert h.running == {t} and h.origin(t) == "discovered"
        await h.put(
            DcUpdate(DcStatus(tid=t, origin="discovered", connected=True, state="connected"))
        )
        await h.put(MdnsServiceDown("eth0|svc|192.168.1.5"))
        await trio.sleep(1000)
        assert h.running == {t}, "goodbye alone must not drop a connected DC"
        await h.put(DcUpdate(DcStatus(tid=t, origin="discovered", connected=False)))
        await trio.sleep(99)
        assert h.running == {t}
        await trio.sleep(2)
        assert h.running == set() and h.stopped == [t]
        n.cancel_scope.cancel()


async def test_referrals_inherit_host_fields_no_loops_depth_cap(autojump_clock) -> None:
    h = Harness(conf("[Controllers]\ncontroller=transport=tcp;traddr=10.0.0.1;host-iface=eth1\n"))
    a = Tid("tcp", "10.0.0.1", "8009", WK, "", "eth1", HOSTNQN)
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(
            DcUpdate(DcStatus(tid=a, origin="configured", log_pages=(referral("10.0.0.2"),)), True)
        )
        b = attrs.evolve(a, traddr="10.0.0.2")
        assert h.running == {a, b} and h.origin(b) == "referral"
        # B refers back to A (a loop) and to C
        await h.put(
            DcUpdate(
                DcStatus(
                    tid=b, origin="referral", log_pages=(referral("10.0.0.1"), referral("10.0.0.3"))
                ),
                True,
            )
        )
        c = attrs.evolve(a, traddr="10.0.0.3")
        assert h.running == {a, b, c} and h.origin(a) == "configured"
        # A chain deeper than 8 stops at depth 8
        prev = c
        for i in range(4, 20):
            nxt = attrs.evolve(a, traddr=f"10.0.0.{i}")
            await h.put(
                DcUpdate(
                    DcStatus(tid=prev, origin="referral", log_pages=(referral(nxt.traddr),)), True
                )
            )
            prev = nxt
        assert len([t for t in h.running if h.origin(t) == "referral"]) == 8
        # A drops its referral: B and everything reached through it go away
        await h.put(DcUpdate(DcStatus(tid=a, origin="configured", log_pages=()), True))
        assert h.running == {a}
        n.cancel_scope.cancel()


async def test_configured_beats_discovered_for_the_same_tid(autojump_clock) -> None:
    h = Harness(conf("[Controllers]\ncontroller=transport=tcp;traddr=10.0.0.1\n"))
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(MdnsServiceUp("k", tid("10.0.0.1")))
        assert h.running == {tid("10.0.0.1")} and h.origin(tid("10.0.0.1")) == "configured"
        assert len(h.started) == 1
        n.cancel_scope.cancel()


async def test_burst_of_mdns_is_one_reconcile(autojump_clock) -> None:
    h = Harness(conf(""))
    async with trio.open_nursery() as n:
        await h.start(n)
        before = h.finder.reconciles
        for i in range(50):
            h.send.send_nowait(MdnsServiceUp(f"k{i}", tid(f"10.1.0.{i + 1}")))
        await trio.testing.wait_all_tasks_blocked()
        assert len(h.running) == 50
        assert h.finder.reconciles - before == 1
        n.cancel_scope.cancel()


async def test_reload_removing_a_controller_stops_it(autojump_clock) -> None:
    h = Harness(
        conf(
            "[Controllers]\ncontroller=transport=tcp;traddr=10.0.0.1\n"
            "controller=transport=tcp;traddr=10.0.0.2\n"
        )
    )
    async with trio.open_nursery() as n:
        await h.start(n)
        new = conf("[Controllers]\ncontroller=transport=tcp;traddr=10.0.0.2\n")
        await h.put(ConfigChanged(new, HOSTNQN))
        assert h.running == {tid("10.0.0.2")} and h.stopped == [tid("10.0.0.1")]
        n.cancel_scope.cancel()


async def test_warm_restart_publishes_cache_before_connecting(tmp_path, autojump_clock) -> None:
    store = StateStore(tmp_path / "state.json")
    t = tid("10.0.0.1")
    page = (attrs.evolve(referral("10.9.9.9"), subtype=2, subnqn="klingons"),)
    store.save(StafdSnapshot(dcs=(DcStatus(tid=t, origin="configured", genctr=7, log_pages=page),)))
    h = Harness(conf("[Controllers]\ncontroller=transport=tcp;traddr=10.0.0.1\n"), store=store)
    seen: list[StafdSnapshot] = []

    async def watch() -> None:
        async for snap in h.published.eventual_values():
            seen.append(snap)

    async with trio.open_nursery() as n:
        n.start_soon(watch)
        await trio.testing.wait_all_tasks_blocked()
        await h.start(n)
        await trio.testing.wait_all_tasks_blocked()
        cached = next(s for s in seen if s.dcs)
        assert cached.dcs[0].log_pages == page and cached.dcs[0].genctr == 7
        assert h.started[0][2] is not None and h.started[0][2].log_pages == page
        n.cancel_scope.cancel()


def test_state_file_round_trip_atomic_and_corrupt(tmp_path) -> None:
    store = StateStore(tmp_path / "s.json")
    t = tid("::1")
    snap = StafdSnapshot(
        dcs=(DcStatus(tid=t, origin="discovered", genctr=3, log_pages=(referral("::2"),)),)
    )
    assert store.save(snap)
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]  # no temp files left behind
    loaded = store.load()
    assert loaded[t].log_pages == snap.dcs[0].log_pages and loaded[t].origin == "discovered"
    (tmp_path / "s.json").write_text("{not json")
    assert store.load() == {}
    (tmp_path / "s.json").write_text(
        '{"format": "nvme-stas-stafd-state", "version": 1, '
        '"dcs": [{"tid": {}, "log_pages": [{"trtype": "x"}]}]}'
    )
    assert store.load() == {}


@pytest.mark.parametrize(
    "bad", ["[]", '{"format": "other"}', '{"format": "nvme-stas-stafd-state", "version": 9}']
)
def test_state_file_foreign_formats_are_ignored(tmp_path, bad: str) -> None:
    (tmp_path / "s.json").write_text(bad)
    assert StateStore(tmp_path / "s.json").load() == {}
