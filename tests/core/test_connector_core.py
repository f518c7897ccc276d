"""stacd's connector core without Trio: messages in, state and effects out."""

from __future__ import annotations

import attrs
from hypothesis import given
from hypothesis import strategies as st

from stas.actors.connector_core import ConnectorState, handle, snapshot
from stas.actors.connector_model import (
    Begin,
    Claim,
    ControllerRead,
    Disconnect,
    DisconnectDone,
    IocFellBehind,
    Later,
    ReadController,
    Reconfigure,
    StartIoc,
    StopIoc,
    TellIoc,
)
from stas.actors.ioc import DeviceRemoved, KernelFound, WantedChanged
from stas.kernel.api import KernelController, Uevent
from stas.messages import (
    AuditDue,
    DcLogPages,
    DcRemoved,
    IocStatus,
    IocUpdate,
    KernelResync,
    StacdConfigChanged,
    StafdAppeared,
    StafdVanished,
)
from stas.plan import wanted_iocs
from tests.helpers.config import stacd_config
from tests.helpers.effects import of
from tests.helpers.entries import HOSTID, HOSTNQN, dc_tid, dlpe, entry, tid

DC1, DC2 = dc_tid("::1"), dc_tid("::2")
AUDIT = "all-connections-matching-disconnect-trtypes"


def state(text: str = "", **kw) -> ConnectorState:
    return ConnectorState(config=stacd_config(text), host_nqn=HOSTNQN, hostid=HOSTID, **kw)


def kernel_io(nqn: str, device: str, traddr: str = "::1") -> KernelController:
    return KernelController(
        device, "tcp", traddr, "4420", nqn, hostnqn=HOSTNQN, cntrltype="io", state="live"
    )


def connected(st: ConnectorState, nqn: str, device: str) -> list:
    """The actor of ``nqn`` reports itself connected as ``device``."""
    old = st.actors[tid(nqn)].status
    new = attrs.evolve(old, device=device, state="connected", connected=True)
    return handle(st, IocUpdate(new, st.actors[tid(nqn)].generation))[1]


def test_a_log_page_starts_one_actor_per_entry_and_arms_the_audit_once() -> None:
    st = state()
    st, fx = handle(st, DcLogPages(DC1, (dlpe("a"), dlpe("b"))))
    assert sorted(e.wanted.tid.subsysnqn for e in of(StartIoc, fx)) == ["a", "b"]
    assert all(e.adopt is None for e in of(StartIoc, fx))
    assert of(Later, fx) == [Later(1.0, AuditDue())]
    _, fx = handle(st, DcLogPages(DC1, (dlpe("a"), dlpe("b"))))
    assert fx == []  # same page: nothing to do, no second audit timer


def test_an_entry_gone_from_the_page_stops_and_disconnects_what_stacd_connected() -> None:
    st = state()
    handle(st, DcLogPages(DC1, (dlpe("a"), dlpe("b"))))
    assert connected(st, "b", "nvme3") == [Claim("nvme3", fresh=True)]
    _, fx = handle(st, DcLogPages(DC1, (dlpe("a"),)))
    assert fx[0] == StopIoc(tid("b"), known="nvme3")
    assert [(d.device, d.tid) for d in of(Disconnect, fx)] == [("nvme3", tid("b"))]
    assert "no longer in any log page" in of(Disconnect, fx)[0].reason


def test_stafd_coming_and_going_changes_nothing() -> None:
    st = state()
    handle(st, DcLogPages(DC1, (dlpe("a"),)))
    connected(st, "a", "nvme1")
    for msg in (StafdVanished(), StafdAppeared(":1.9"), StafdVanished()):
        _, fx = handle(st, msg)
        assert fx == []
    assert [s.connected for s in snapshot(st) or ()] == [True]


def test_a_removed_dc_takes_only_what_no_other_dc_lists() -> None:
    st = state()
    handle(st, DcLogPages(DC1, (dlpe("a"), dlpe("shared"))))
    handle(st, DcLogPages(DC2, (dlpe("shared"),)))
    connected(st, "a", "nvme1")
    connected(st, "shared", "nvme2")
    _, fx = handle(st, DcRemoved(DC1))
    assert [d.device for d in of(Disconnect, fx)] == ["nvme1"]
    assert st.actors[tid("shared")].wanted.dcs == (DC2,)


def test_warm_start_adopts_the_kernel_controller_instead_of_connecting() -> None:
    st = state("[Controllers]\ncontroller=transport=tcp;traddr=::1;trsvcid=4420;nqn=a\n")
    _, fx = handle(st, Begin((kernel_io("a", "nvme7"),)))
    (start,) = of(StartIoc, fx)
    assert start.adopt is not None and start.adopt.device == "nvme7"
    assert Claim("nvme7", fresh=False) in fx
    assert of(Later, fx) == [Later(60.0, AuditDue())]  # stafd's grace before the audit
    assert [s.device for s in snapshot(st) or ()] == ["nvme7"]
    assert snapshot(st) is None  # nothing changed since


def test_ncc_change_is_told_to_the_running_actor_never_restarts_it() -> None:
    st = state()
    handle(st, DcLogPages(DC1, (dlpe("a"),)))
    _, fx = handle(st, DcLogPages(DC1, (dlpe("a", eflags="4"),)))
    (tell,) = fx
    assert isinstance(tell, TellIoc) and isinstance(tell.event, WantedChanged)
    assert tell.event.wanted.ncc is True


def test_an_actor_that_fell_behind_restarts_adopting_its_device() -> None:
    st = state()
    handle(st, DcLogPages(DC1, (dlpe("a"),)))
    connected(st, "a", "nvme4")
    handle(st, Begin(()))  # nothing in the index yet: a resync brings the device in
    st.index.add(kernel_io("a", "nvme4"))
    _, fx = handle(st, IocFellBehind(tid("a")))
    assert fx[0] == StopIoc(tid("a"), known="nvme4")
    (start,) = of(StartIoc, fx)
    assert start.adopt is not None and start.adopt.device == "nvme4"
    assert st.restarts == 1 and not of(Disconnect, fx)


def test_uevents_read_sysfs_through_an_effect_and_the_audit_waits_for_it() -> None:
    st = state(f"[I/O controller connection management]\ndisconnect-scope={AUDIT}\n")
    _, fx = handle(st, Uevent("add", "/devices/virtual/nvme-fabrics/ctl/nvme9"))
    assert fx == [ReadController("nvme9"), Later(1.0, AuditDue("nvme9"))]
    handle(st, ControllerRead("nvme9", kernel_io("stranger", "nvme9"), audit=False))
    assert "nvme9" in st.index.by_device
    _, fx = handle(st, AuditDue("nvme9"))
    assert fx == []  # stafd's data has not settled yet: an absent log page proves nothing
    _, fx = handle(st, AuditDue())  # the whole audit: nvme9 is nobody's wish
    (gone,) = fx
    assert isinstance(gone, Disconnect) and gone.device == "nvme9"
    assert "disconnect-trtypes=tcp" in gone.reason
    _, fx = handle(st, AuditDue("nvme9"))
    assert fx == [ReadController("nvme9", audit=True)]
    _, fx = handle(st, ControllerRead("nvme9", kernel_io("stranger", "nvme9"), audit=True))
    assert fx == []  # its disconnect is in flight: never a second one
    handle(st, DisconnectDone("nvme9", gone=False))  # the kernel refused: audited again later
    _, fx = handle(st, ControllerRead("nvme9", kernel_io("stranger", "nvme9"), audit=True))
    assert fx == [gone]


def test_the_audit_spares_a_device_that_vanished_or_that_an_actor_holds() -> None:
    st = state(f"[I/O controller connection management]\ndisconnect-scope={AUDIT}\n")
    handle(st, AuditDue())
    _, fx = handle(st, ControllerRead("nvme9", None, audit=True))
    assert fx == []
    handle(st, DcLogPages(DC1, (dlpe("a"),)))
    connected(st, "a", "nvme1")
    _, fx = handle(st, ControllerRead("nvme1", kernel_io("a", "nvme1"), audit=True))
    assert fx == []


def test_a_resync_tells_actors_what_they_missed() -> None:
    st = state()
    handle(st, DcLogPages(DC1, (dlpe("a"), dlpe("b"))))
    connected(st, "a", "nvme1")
    found = kernel_io("b", "nvme2")
    _, fx = handle(st, KernelResync((found,)))
    assert TellIoc(tid("a"), DeviceRemoved("nvme1")) in fx
    assert TellIoc(tid("b"), KernelFound(found)) in fx


def test_boot_subsystems_on_reconfigure_are_wanted_whatever_the_log_pages_say() -> None:
    st = state()
    boot = ((tid("root"), {"kato": "30"}),)
    _, fx = handle(st, Reconfigure(StacdConfigChanged(stacd_config()), boot))
    (start,) = of(StartIoc, fx)
    assert start.wanted.origin == "nbft" and start.wanted.params == {"kato": "30"}
    connected(st, "root", "nvme0")
    _, fx = handle(st, DcLogPages(DC1, ()))
    assert not of(Disconnect, fx) and not of(StopIoc, fx)


def test_hostile_entries_start_nothing_and_are_warned_once(caplog) -> None:
    st = state()
    bad = (dlpe("evil,hostnqn=nqn.x"), dlpe("ok", traddr="1.2.3.4,x"))
    _, fx = handle(st, DcLogPages(DC1, bad))
    _, again = handle(st, DcLogPages(DC1, bad))
    assert not of(StartIoc, fx) and again == []
    assert len([r for r in caplog.records if "ignoring log page entry" in r.getMessage()]) == 2


def test_the_status_shows_the_entry_as_stafd_sent_it() -> None:
    st = state()
    sent = dlpe("a") | {"portid": "7", "treq": "not specified"}
    handle(st, DcLogPages(DC1, (entry("a", portid="7", treq="not specified"),)))
    status = st.actors[tid("a")].status
    assert dict(status.dlpe) == sent
    gen = st.actors[tid("a")].generation
    handle(st, IocUpdate(IocStatus(tid("a"), "discovered", state="connecting"), gen))
    assert dict(st.actors[tid("a")].status.dlpe) == sent  # the actor does not know it


DCS = (DC1, DC2, dc_tid("::3"))
PAGE = st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=4, unique=True)
STEP = st.tuples(st.sampled_from(DCS), st.none() | PAGE)


@given(st.lists(STEP, max_size=12))
def test_the_running_actors_are_always_what_the_planner_wants(steps) -> None:
    """Whatever order log pages and removals arrive in, the actors the effects leave running
    are exactly ``wanted_iocs`` of the latest pages: incremental work never drifts."""
    st_, running, pages = state(), set(), {}
    for dc, nqns in steps:
        if nqns is None:
            pages.pop(dc, None)
            msg = DcRemoved(dc)
        else:
            pages[dc] = [dlpe(n, eflags=str(4 * (len(n) % 2))) for n in nqns]
            msg = DcLogPages(dc, tuple(pages[dc]))
        _, fx = handle(st_, msg)
        for e in fx:
            if isinstance(e, StartIoc):
                assert e.wanted.tid not in running
                running.add(e.wanted.tid)
            elif isinstance(e, StopIoc):
                running.remove(e.tid)
        wanted = wanted_iocs(config=st_.config, log_pages=pages, host_nqn=HOSTNQN)
        assert running == set(wanted)
        assert {t: a.wanted.dcs for t, a in st_.actors.items()} == {
            t: w.dcs for t, w in wanted.items()
        }


OPS = st.lists(
    st.tuples(
        st.sampled_from(["page", "connected", "restart"]),
        st.sampled_from([DC1, DC2]),
        st.sets(st.sampled_from("abcdefgh")),
    ),
    max_size=12,
)


@given(OPS)
def test_the_snapshot_is_every_actors_status_in_tid_order(ops) -> None:
    """Kept in order as actors come, go, restart and report, never sorted again."""
    s = state()
    for n, (kind, dc, nqns) in enumerate(ops):
        if kind == "page":
            handle(s, DcLogPages(dc, tuple(dlpe(x) for x in sorted(nqns))))
        elif s.actors:
            t = sorted(s.actors)[len(nqns) % len(s.actors)]
            if kind == "restart":
                handle(s, IocFellBehind(t))
            elif not s.actors[t].status.connected:
                connected(s, t.subsysnqn, f"nvme{n}")
        shown = snapshot(s)
        expected = [s.actors[t].status for t in sorted(s.actors)]
        assert shown is None or list(shown) == expected
        assert all(a is b for a, b in zip(s.order, expected, strict=True))


def test_a_stopped_actors_late_status_is_not_taken_for_its_successors() -> None:
    """The actor of a Tid stopped and a new one started: the old one's last update, still in
    the inbox, must not become the new actor's status (nor claim a device for it)."""
    st = state()
    handle(st, DcLogPages(DC1, (entry("a"),)))
    first = st.actors[tid("a")].generation
    handle(st, DcLogPages(DC1, ()))
    handle(st, DcLogPages(DC1, (entry("a"),)))
    second = st.actors[tid("a")].generation
    assert second != first
    late = attrs.evolve(st.actors[tid("a")].status, device="nvme7", state="connected",
                        connected=True)  # fmt: skip
    assert of(Claim, handle(st, IocUpdate(late, first))[1]) == []
    assert not st.actors[tid("a")].status.connected and "nvme7" not in st.owner
    assert of(Claim, handle(st, IocUpdate(late, second))[1]) == [Claim("nvme7", fresh=True)]
    assert st.actors[tid("a")].status.connected and st.owner["nvme7"] == tid("a")
