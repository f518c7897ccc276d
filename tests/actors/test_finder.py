"""Finder: wanted-set decisions, removal policy, referrals, coalescing, warm restart."""

from __future__ import annotations

import json
import logging

import attrs
import trio
import trio.testing
from trio_util import AsyncValue

from stas.actors.daemon_dbus import find_by_tid
from stas.actors.finder import MAX_REFERRAL_DCS, run_finder
from stas.messages import (
    DcStatus,
    DcUpdate,
    MdnsServiceDown,
    MdnsServiceUp,
    StafdConfigChanged,
    StafdSnapshot,
    Tid,
)
from stas.nvme.logpage import LogPageEntry
from stas.state import StateStore
from tests.helpers.config import stafd_config
from tests.helpers.entries import HOSTNQN, WK, log_entry
from tests.helpers.finder import FinderHarness, ctrls, refuse_all, tid

ZC = "[Discovery controller connection management]\nzeroconf-connections-persistence="


def referral(addr: str, port: str = "8009") -> LogPageEntry:
    return log_entry(WK, addr, port, subtype=1)


def status(t: Tid, *refs: str, connected: bool = False, origin: str = "configured") -> DcUpdate:
    pages = tuple(referral(r) for r in refs)
    return DcUpdate(DcStatus(tid=t, origin=origin, connected=connected, log_pages=pages), True)


async def test_configured_dcs_start_and_exclusion_wins(autojump_clock) -> None:
    h = FinderHarness(
        stafd_config(ctrls("10.0.0.1", "10.0.0.2", extra="exclude=traddr=10.0.0.2\n"))
    )
    async with trio.open_nursery() as n:
        await h.start(n)
        assert h.running == {tid("10.0.0.1")}
        assert [(t, o) for t, o, _ in h.started] == [(tid("10.0.0.1"), "configured")]
        assert h.published.value.dcs[0].tid == tid("10.0.0.1")
        assert h.published.value.dcs[0].origin == "configured"
        n.cancel_scope.cancel()


async def test_unknown_message_is_logged_then_a_reload_applies(autojump_clock, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="stas.finder")
    h = FinderHarness(stafd_config(ctrls("10.0.0.1")))
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(object(), StafdConfigChanged(stafd_config(ctrls("10.0.0.2")), HOSTNQN))
        assert "finder: unexpected message 'object' ignored" in caplog.text
        assert h.running == {tid("10.0.0.2")}
        n.cancel_scope.cancel()


async def test_excluded_hostname_is_never_resolved(autojump_clock) -> None:
    asked: list[str] = []

    async def resolver(name: str):
        asked.append(name)
        return ["10.0.0.7"]

    h = FinderHarness(
        stafd_config(ctrls("array.example", extra="exclude=traddr=array.example\n")),
        resolver=resolver,
    )
    async with trio.open_nursery() as n:
        await h.start(n)
        assert h.running == set() and asked == []
        n.cancel_scope.cancel()


async def test_ip_family_filters_addresses(autojump_clock) -> None:
    h = FinderHarness(stafd_config("[Global]\nip-family=ipv6\n" + ctrls("127.0.0.1", "fd00::9")))
    async with trio.open_nursery() as n:
        await h.start(n)
        assert h.running == {tid("fd00::9")}
        n.cancel_scope.cancel()


async def test_localhost_with_ipv6_only_is_the_v6_loopback(autojump_clock) -> None:
    h = FinderHarness(stafd_config("[Global]\nip-family=ipv6\n" + ctrls("localhost")))
    async with trio.open_nursery() as n:
        await h.start(n)
        assert h.running == {tid("::1")}
        n.cancel_scope.cancel()


async def test_hostname_uses_the_address_that_answers(autojump_clock) -> None:
    async def only_v6(addr: str, port: int, iface: str) -> None:
        if addr != "::1":
            raise OSError("refused")

    h = FinderHarness(stafd_config(ctrls("localhost")), probe=only_v6)
    async with trio.open_nursery() as n:
        await h.start(n)
        assert h.running == {tid("::1")} and len(h.started) == 1
        n.cancel_scope.cancel()


async def test_mdns_dc_kept_while_connected_and_dropped_after_persistence(autojump_clock) -> None:
    h = FinderHarness(stafd_config(ZC + "100\n"))
    t = tid("192.168.1.5", iface="eth0")
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(MdnsServiceUp("eth0|svc|192.168.1.5", t))
        assert h.running == {t} and h.origin(t) == "discovered"
        await h.put(status(t, connected=True, origin="discovered"))
        await h.put(MdnsServiceDown("eth0|svc|192.168.1.5"))
        await trio.sleep(1000)
        assert h.running == {t}, "goodbye alone must not drop a connected DC"
        await h.put(status(t, connected=False, origin="discovered"))
        await trio.sleep(99)
        assert h.running == {t}
        await trio.sleep(2)
        assert h.running == set() and h.stopped == [t]
        assert h.published_tids() == set()  # gone from the snapshot: D-Bus emits dc_removed
        n.cancel_scope.cancel()


async def test_mdns_persistence_zero_and_forever(autojump_clock) -> None:
    t = tid("192.168.1.5", iface="eth0")
    for persistence, kept in (("0", False), ("-1", True)):
        h = FinderHarness(stafd_config(ZC + persistence + "\n"))
        async with trio.open_nursery() as n:
            await h.start(n)
            await h.put(MdnsServiceUp("k", t), MdnsServiceDown("k"))
            await trio.sleep(10 * 86400)
            assert (h.running == {t}) is kept, persistence
            n.cancel_scope.cancel()


async def test_mdns_dc_removed_at_once_when_excluded_or_reannounced_kept(autojump_clock) -> None:
    h = FinderHarness(stafd_config(""))
    t = tid("192.168.1.5", iface="eth0")
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(MdnsServiceUp("k", t), MdnsServiceDown("k"), MdnsServiceUp("k2", t))
        assert h.running == {t} and len(h.started) == 1
        await h.put(
            StafdConfigChanged(stafd_config("[Controllers]\nexclude=host-iface=eth0\n"), HOSTNQN)
        )
        assert h.running == set() and h.stopped == [t]
        n.cancel_scope.cancel()


async def test_zeroconf_disabled_drops_discovered_and_ignores_late_news(autojump_clock) -> None:
    h = FinderHarness(stafd_config(""))
    t, u = tid("192.168.1.5"), tid("192.168.1.6")
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(MdnsServiceUp("k", t))
        off = stafd_config("[Service Discovery]\nzeroconf=disabled\n")
        await h.put(StafdConfigChanged(off, HOSTNQN), MdnsServiceUp("late", u))
        assert h.running == set()
        await h.put(StafdConfigChanged(stafd_config(""), HOSTNQN))
        assert h.running == set(), "nothing stale comes back when mDNS is switched on again"
        await h.put(MdnsServiceUp("k", t))
        assert h.running == {t}
        n.cancel_scope.cancel()


async def test_referrals_inherit_host_fields_no_loops_depth_cap(autojump_clock) -> None:
    h = FinderHarness(
        stafd_config(
            "[Controllers]\ncontroller=transport=tcp;traddr=10.0.0.1;host-iface=eth1;"
            "host-traddr=10.0.0.100;host-nqn=nqn.2014-08.org.example:h1\n"
        )
    )
    a = Tid("tcp", "10.0.0.1", "8009", WK, "10.0.0.100", "eth1", "nqn.2014-08.org.example:h1")
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(status(a, "10.0.0.2"))
        b = attrs.evolve(a, traddr="10.0.0.2")
        assert h.running == {a, b} and h.origin(b) == "referral"
        assert h.wanted[b].referral_depth == 1
        # B refers back to A (a loop) and to C
        await h.put(status(b, "10.0.0.1", "10.0.0.3", origin="referral"))
        c = attrs.evolve(a, traddr="10.0.0.3")
        assert h.running == {a, b, c} and h.origin(a) == "configured"
        assert len(h.started) == 3, "the loop back to A started nothing"
        # A chain deeper than 8 stops at depth 8
        prev = c
        for i in range(4, 20):
            nxt = attrs.evolve(a, traddr=f"10.0.0.{i}")
            await h.put(status(prev, nxt.traddr, origin="referral"))
            prev = nxt
        referred = [t for t in h.running if h.origin(t) == "referral"]
        assert len(referred) == 8
        assert max(h.finder.running[t].referral_depth for t in referred) == 8
        # A drops its referral: B and everything reached through it go away
        await h.put(status(a))
        assert h.running == {a}
        assert h.published_tids() == {a}
        n.cancel_scope.cancel()


async def test_referral_amplification_is_capped(autojump_clock, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="stas.finder")
    h = FinderHarness(stafd_config(ctrls("10.0.0.1")))
    a = tid("10.0.0.1")
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(status(a, *[f"10.1.0.{i}" for i in range(1, 101)], "0.0.0.0", ""))
        assert len(h.running) == 1 + 64
        assert "lists 102 referrals; following the first 64" in caplog.text
        # every referred DC refers to 64 more: the total stays bounded
        msgs = [
            status(tid(f"10.1.0.{i}"), *[f"10.{i + 1}.0.{j}" for j in range(64)], origin="referral")
            for i in range(1, 65)
        ]
        await h.put(*msgs)
        assert len(h.running) == 1 + MAX_REFERRAL_DCS
        await h.put(status(a, *[f"10.1.0.{i}" for i in range(1, 101)]))  # one more reconcile
        hits = [r.getMessage() for r in caplog.records if "in total" in r.getMessage()]
        # logged once, naming the DC whose referrals went past the cap (breadth first: the 4th)
        assert hits == [
            f"DC {tid('10.1.0.4')}: its referrals go beyond the cap of {MAX_REFERRAL_DCS} "
            "referred DCs in total; ignoring the rest"
        ]
        n.cancel_scope.cancel()


# --- mDNS-found DCs get upstream's TID defaults (issue 9 items 1 and 2) -----------------------


def announced(addr: str = "192.168.1.5", iface: str = "eth0") -> Tid:
    """What stas.mdns_txt makes of an announcement: no host NQN."""
    return Tid("tcp", addr, "8009", WK, "", iface, "")


async def test_mdns_dc_gets_the_host_nqn(autojump_clock) -> None:
    h = FinderHarness(stafd_config(""))
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(MdnsServiceUp("k", announced()))
        assert h.running == {tid("192.168.1.5", iface="eth0")}
        assert h.published_tids() == {tid("192.168.1.5", iface="eth0")}
        # upstream's `stafctl dlp -t tcp -a 192.168.1.5 -s 8009 -f eth0` (default host NQN)
        args = ("tcp", "192.168.1.5", "8009", WK, "", "eth0", HOSTNQN)
        assert find_by_tid(h.published.value.dcs, args) is not None
        n.cancel_scope.cancel()


async def test_ignore_iface_clears_host_iface_of_mdns_dcs(autojump_clock) -> None:
    h = FinderHarness(stafd_config("[Global]\nignore-iface=true\n"))
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(MdnsServiceUp("k", announced()))
        assert h.running == {tid("192.168.1.5")}
        # a reload that turns it off again brings the interface back
        await h.put(StafdConfigChanged(stafd_config(""), HOSTNQN))
        assert h.running == {tid("192.168.1.5", iface="eth0")}
        n.cancel_scope.cancel()


async def test_cached_mdns_dc_without_host_nqn_is_restored_with_it(tmp_path, autojump_clock):
    store = StateStore(tmp_path / "state.json")
    old = DcStatus(tid=announced(), origin="discovered", log_pages=(referral("10.9.9.9"),))
    store.save(StafdSnapshot(dcs=(old,), generation=1))
    h = FinderHarness(stafd_config(""), store=store)
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(MdnsServiceUp("k", announced()))
        t = tid("192.168.1.5", iface="eth0")
        assert h.running == {t, tid("10.9.9.9", iface="eth0")}  # one DC, not two
        initial = {started: cached for started, _, cached in h.started}[t]
        assert initial is not None and initial.log_pages == old.log_pages
        n.cancel_scope.cancel()


async def test_unspecified_referral_addresses_are_ignored(autojump_clock) -> None:
    h = FinderHarness(stafd_config(ctrls("10.0.0.1")))
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(status(tid("10.0.0.1"), "0.0.0.0", "::", "::ffff:10.0.0.9"))
        assert h.running == {tid("10.0.0.1"), tid("10.0.0.9")}
        n.cancel_scope.cancel()


async def test_configured_beats_discovered_for_the_same_tid(autojump_clock) -> None:
    h = FinderHarness(stafd_config(ctrls("10.0.0.1")))
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(MdnsServiceUp("k", tid("10.0.0.1")))
        assert h.running == {tid("10.0.0.1")} and h.origin(tid("10.0.0.1")) == "configured"
        assert len(h.started) == 1
        # removing the line leaves the DC running, now as an mDNS one
        await h.put(StafdConfigChanged(stafd_config(""), HOSTNQN))
        assert h.origin(tid("10.0.0.1")) == "discovered" and h.stopped == []
        assert h.published.value.dcs[0].origin == "discovered"
        n.cancel_scope.cancel()


async def test_burst_of_mdns_is_one_reconcile(autojump_clock) -> None:
    h = FinderHarness(stafd_config(""))
    async with trio.open_nursery() as n:
        await h.start(n)
        before = h.finder.reconciles
        generation = h.published.value.generation
        for i in range(50):
            h.send.send_nowait(MdnsServiceUp(f"k{i}", tid(f"10.1.0.{i + 1}")))
        await trio.testing.wait_all_tasks_blocked()
        assert len(h.running) == 50
        assert h.finder.reconciles - before == 1
        assert h.published.value.generation == generation + 1
        n.cancel_scope.cancel()


async def test_reload_removing_a_controller_stops_it(autojump_clock) -> None:
    h = FinderHarness(stafd_config(ctrls("10.0.0.1", "10.0.0.2")))
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(StafdConfigChanged(stafd_config(ctrls("10.0.0.2")), HOSTNQN))
        assert h.running == {tid("10.0.0.2")} and h.stopped == [tid("10.0.0.1")]
        assert h.published_tids() == {tid("10.0.0.2")}
        n.cancel_scope.cancel()


async def test_reload_changing_params_restarts_with_the_cached_status(autojump_clock) -> None:
    h = FinderHarness(stafd_config(ctrls("10.0.0.1")))
    t = tid("10.0.0.1")
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(status(t, "10.0.0.2"))
        await h.put(StafdConfigChanged(stafd_config(ctrls("10.0.0.1")), HOSTNQN))
        assert h.stopped == [], "an unchanged reload restarts nothing"
        new = stafd_config("[Controllers]\ncontroller=transport=tcp;traddr=10.0.0.1;kato=10\n")
        await h.put(StafdConfigChanged(new, HOSTNQN))
        assert h.stopped == [t]
        restarted = [(o, init) for s, o, init in h.started if s == t][-1]
        assert restarted[1] is not None and restarted[1].log_pages == (referral("10.0.0.2"),)
        assert h.wanted[t].params == {"kato": "10"}
        assert tid("10.0.0.2") in h.running, "the referral survived the restart"
        n.cancel_scope.cancel()


async def test_persistence_deadline_does_not_cut_a_slow_reload(autojump_clock) -> None:
    async def slow(name: str):
        await trio.sleep(8)
        return ["10.0.0.8"]

    h = FinderHarness(stafd_config(ZC + "5\n"), resolver=slow)
    m = tid("192.168.1.5")
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(MdnsServiceUp("k", m), MdnsServiceDown("k"))  # expires in 5 s
        await h.put(StafdConfigChanged(stafd_config(ZC + "5\n" + ctrls("array.example")), HOSTNQN))
        await trio.sleep(10)
        assert h.running == {tid("10.0.0.8")}
        n.cancel_scope.cancel()


async def test_warm_restart_publishes_cache_before_connecting(tmp_path, autojump_clock) -> None:
    store = StateStore(tmp_path / "state.json")
    t, gone = tid("10.0.0.1"), tid("10.0.0.99")
    page = (attrs.evolve(referral("10.9.9.9"), subtype=2, subnqn="nqn.2014-08.org.example:s"),)
    cached = (
        DcStatus(tid=t, origin="configured", genctr=7, log_pages=page),
        DcStatus(tid=gone, origin="configured", log_pages=page),
    )
    store.save(StafdSnapshot(dcs=cached))
    h = FinderHarness(stafd_config(ctrls("10.0.0.1")), store=store)
    async with trio.open_nursery() as n:
        await h.start(n)  # the D-Bus actor starts after this: what it sees first is checked
        (dc,) = h.published.value.dcs
        assert (dc.tid, dc.log_pages, dc.genctr, dc.connected) == (t, page, 7, False)
        assert dc.dlpes()[0]["subnqn"] == "nqn.2014-08.org.example:s"
        # a DC no longer configured is not started, and not shown
        assert [(s, init.log_pages if init else None) for s, _, init in h.started] == [(t, page)]
        n.cancel_scope.cancel()


async def test_state_saved_after_reconcile_and_on_stop(tmp_path, autojump_clock) -> None:
    path = tmp_path / "state.json"
    published = AsyncValue(StafdSnapshot())
    send, receive = trio.open_memory_channel(100)

    async def factory(wanted, updates, initial) -> None:
        await trio.sleep_forever()

    t = tid("10.0.0.1")
    async with trio.open_nursery() as n:
        await n.start(
            lambda task_status: run_finder(
                config=stafd_config(ctrls("10.0.0.1")), host_nqn=HOSTNQN, inbox=receive,
                inbox_send=send, dc_factory=factory, published=published,
                state_store=StateStore(path), probe=refuse_all, task_status=task_status,
            )
        )  # fmt: skip
        saved = json.loads(path.read_text())
        assert [d["tid"]["traddr"] for d in saved["dcs"]] == ["10.0.0.1"]
        await send.send(DcUpdate(DcStatus(tid=t, origin="configured", genctr=4), True))
        await trio.testing.wait_all_tasks_blocked()
        assert json.loads(path.read_text())["dcs"][0]["genctr"] == 4
        n.cancel_scope.cancel()
    assert StateStore(path).load()[t].genctr == 4
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


# --- NBFT ---------------------------------------------------------------------------------------


def nbft_table(*uris: str, hostnqn_configured: bool = False) -> bytes:
    import nbft_gen as gen

    return gen.build(
        gen.Table(
            hostnqn="nqn.2014-08.org.nvmexpress:uuid:99999999-9999-4999-8999-999999999999",
            host_flags=0x05 if hostnqn_configured else 0x01,
            hfis=[gen.Hfi(mac="52:54:00:00:00:01", ip="10.0.2.15", prefix=24)],
            discoveries=[gen.Discovery(uri=u, hfi=1) for u in uris],
        )
    )


def nbft_harness(tmp_path, text: str = "", **kw) -> FinderHarness:
    h = FinderHarness(stafd_config(text), **kw)
    h.finder.nbft_dir = tmp_path
    h.finder.iface_of = lambda hfi: {"52:54:00:00:00:01": "ens3"}.get(hfi.mac, "")
    return h


async def test_nbft_dcs_start_with_origin_nbft_and_the_hfi_interface(
    autojump_clock, tmp_path
) -> None:
    (tmp_path / "NBFT").write_bytes(nbft_table("nvme+tcp://10.0.2.2:8009/", "nvme+tcp://10.0.2.9/"))
    h = nbft_harness(tmp_path)
    async with trio.open_nursery() as n:
        await h.start(n)
        want = {tid("10.0.2.2", iface="ens3"), tid("10.0.2.9", iface="ens3")}
        assert h.running == want
        assert {dc.origin for dc in h.published.value.dcs} == {"nbft"}
        assert h.published_tids() == want
        n.cancel_scope.cancel()


async def test_nbft_host_nqn_used_when_the_firmware_configured_it(autojump_clock, tmp_path) -> None:
    (tmp_path / "NBFT").write_bytes(nbft_table("nvme+tcp://10.0.2.2/", hostnqn_configured=True))
    h = nbft_harness(tmp_path, "[Global]\nignore-iface=true\n")
    async with trio.open_nursery() as n:
        await h.start(n)
        (t,) = h.running
        assert t.host_nqn.endswith("99999999-9999-4999-8999-999999999999")
        assert t.host_iface == ""  # ignore-iface applies to NBFT DCs too
        n.cancel_scope.cancel()


async def test_nbft_dc_also_configured_shows_configured_and_exclusion_applies(
    autojump_clock, tmp_path
) -> None:
    (tmp_path / "NBFT").write_bytes(nbft_table("nvme+tcp://10.0.2.2/", "nvme+tcp://10.0.2.9/"))
    text = ctrls(extra="controller=transport=tcp;traddr=10.0.2.2;host-iface=ens3\n")
    h = nbft_harness(tmp_path, text + "exclude=traddr=10.0.2.9\n")
    async with trio.open_nursery() as n:
        await h.start(n)
        assert h.running == {tid("10.0.2.2", iface="ens3")}
        assert h.origin(tid("10.0.2.2", iface="ens3")) == "configured"
        n.cancel_scope.cancel()


async def test_nbft_reread_on_reload(autojump_clock, tmp_path) -> None:
    path = tmp_path / "NBFT"
    path.write_bytes(nbft_table("nvme+tcp://10.0.2.2/"))
    h = nbft_harness(tmp_path)
    async with trio.open_nursery() as n:
        await h.start(n)
        assert h.running == {tid("10.0.2.2", iface="ens3")}
        path.write_bytes(nbft_table("nvme+tcp://10.0.2.3/"))
        await h.put(StafdConfigChanged(stafd_config(""), HOSTNQN))
        assert h.running == {tid("10.0.2.3", iface="ens3")}
        assert h.stopped == [tid("10.0.2.2", iface="ens3")]
        path.unlink()
        await h.put(StafdConfigChanged(stafd_config(""), HOSTNQN))
        assert h.running == set()
        n.cancel_scope.cancel()


async def test_bad_nbft_is_named_once_and_changes_nothing(autojump_clock, tmp_path, caplog) -> None:
    body = bytearray(nbft_table("nvme+tcp://10.0.2.2/"))
    body[20] ^= 0xFF  # checksum now wrong
    (tmp_path / "NBFT").write_bytes(bytes(body))
    (tmp_path / "NBFT1").write_bytes(nbft_table("nvme+tcp://dc.example/"))  # not an IP
    h = nbft_harness(tmp_path, ctrls("10.0.0.1"))
    with caplog.at_level(logging.WARNING, logger="stas.finder"):
        async with trio.open_nursery() as n:
            await h.start(n)
            await h.put(StafdConfigChanged(stafd_config(ctrls("10.0.0.1")), HOSTNQN))
            assert h.running == {tid("10.0.0.1")}
            n.cancel_scope.cancel()
    texts = [r.getMessage() for r in caplog.records]
    assert sum("NBFT" in t and "checksum mismatch" in t for t in texts) == 1
    assert sum("'dc.example' is not an IP address" in t for t in texts) == 1


async def test_nbft_dc_warm_restart_keeps_its_origin(autojump_clock, tmp_path) -> None:
    (tmp_path / "NBFT").write_bytes(nbft_table("nvme+tcp://10.0.2.2/"))
    store = StateStore(tmp_path / "state.json")
    t = tid("10.0.2.2", iface="ens3")
    h = nbft_harness(tmp_path, store=store)
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(status(t, connected=True, origin="nbft"))
        n.cancel_scope.cancel()
    h2 = nbft_harness(tmp_path, store=store)
    async with trio.open_nursery() as n:
        await h2.start(n)
        ((started, origin, initial),) = h2.started
        assert (started, origin) == (t, "nbft") and initial is not None
        n.cancel_scope.cancel()


# --- slow effects run beside the loop: updates are never held up behind them (issue 10) -------


async def connected_published_after(h: FinderHarness, t: Tid, *before) -> float:
    """Seconds from sending ``before`` then ``t``'s "connected" until the snapshot shows it."""
    start = trio.current_time()
    for m in before:
        await h.send.send(m)
    await h.send.send(status(t, connected=True))
    await h.published.wait_value(lambda s: any(d.tid == t and d.connected for d in s.dcs))
    return trio.current_time() - start


async def test_a_slow_name_does_not_hold_up_dc_updates(autojump_clock) -> None:
    async def slow(name: str):
        await trio.sleep(8)  # a DNS server that takes its time
        return ["10.0.0.8"]

    h = FinderHarness(stafd_config(ctrls("10.0.0.1")), resolver=slow)
    async with trio.open_nursery() as n:
        await h.start(n)
        reload = StafdConfigChanged(stafd_config(ctrls("10.0.0.1", "array.example")), HOSTNQN)
        assert await connected_published_after(h, tid("10.0.0.1"), reload) == 0
        assert h.running == {tid("10.0.0.1")}
        await trio.sleep(9)
        assert h.running == {tid("10.0.0.1"), tid("10.0.0.8")}
        n.cancel_scope.cancel()


async def test_a_slow_dc_stop_does_not_hold_up_other_updates(autojump_clock) -> None:
    h = FinderHarness(stafd_config(ctrls("10.0.0.1", "10.0.0.2")), cleanup=10)
    async with trio.open_nursery() as n:
        await h.start(n)
        reload = StafdConfigChanged(stafd_config(ctrls("10.0.0.2")), HOSTNQN)
        assert await connected_published_after(h, tid("10.0.0.2"), reload) == 0
        assert h.published_tids() == {tid("10.0.0.2")} and h.stopped == []
        await trio.sleep(11)
        assert h.stopped == [tid("10.0.0.1")]
        n.cancel_scope.cancel()


async def test_a_restart_waits_for_the_old_actors_cleanup(autojump_clock) -> None:
    h = FinderHarness(stafd_config(ctrls("10.0.0.1")), cleanup=10)
    t = tid("10.0.0.1")
    async with trio.open_nursery() as n:
        await h.start(n)
        new = stafd_config("[Controllers]\ncontroller=transport=tcp;traddr=10.0.0.1;kato=10\n")
        await h.put(StafdConfigChanged(new, HOSTNQN))
        assert len(h.started) == 1, "never two actors for one DC"
        await trio.sleep(11)
        assert h.stopped == [t] and len(h.started) == 2 and h.wanted[t].params == {"kato": "10"}
        n.cancel_scope.cancel()


async def test_slow_probes_do_not_hold_up_dc_updates(autojump_clock) -> None:
    async def slow_probe(addr: str, port: int, iface: str) -> None:
        await trio.sleep(2)  # each address times out
        raise OSError("timed out")

    h = FinderHarness(stafd_config(ctrls("10.0.0.1")), probe=slow_probe)
    async with trio.open_nursery() as n:
        await h.start(n)
        reload = StafdConfigChanged(stafd_config(ctrls("10.0.0.1", "localhost")), HOSTNQN)
        assert await connected_published_after(h, tid("10.0.0.1"), reload) == 0
        await trio.sleep(5)
        assert h.running == {tid("10.0.0.1"), tid("127.0.0.1")}
        n.cancel_scope.cancel()
