"""Disconnects in flight, in the pure core: one per device, a controller wanted again waits
for its old one to go, a failure leaves the controller to the usual rules, and the name the
kernel hands out again is not mistaken for the old one. No Trio: messages in, effects out."""

from __future__ import annotations

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from stas.actors.connector_core import ConnectorState, handle, snapshot
from stas.actors.connector_model import (
    Begin,
    Disconnect,
    DisconnectDone,
    Reconfigure,
    StartIoc,
    StopIoc,
    TellIoc,
)
from stas.actors.ioc import DeviceRemoved
from stas.kernel.api import KernelController, Uevent
from stas.messages import (
    AuditDue,
    DcRemoved,
    IocUpdate,
    KernelResync,
    StacdConfigChanged,
)
from tests.helpers.connector import stacd_config
from tests.helpers.effects import of
from tests.helpers.entries import HOSTID, HOSTNQN, dc_tid, page, tid

DC1, DC2 = dc_tid("::1"), dc_tid("::2")
AUDIT = "all-connections-matching-disconnect-trtypes"


def state(text: str = "") -> ConnectorState:
    return ConnectorState(config=stacd_config(text), host_nqn=HOSTNQN, hostid=HOSTID)


def io(nqn: str, device: str) -> KernelController:
    return KernelController(
        device, "tcp", "::1", "4420", nqn, hostnqn=HOSTNQN, cntrltype="io", state="live"
    )


def connected(st: ConnectorState, nqn: str, device: str) -> list:
    """The actor of ``nqn`` reports itself connected as ``device`` (and the kernel has it)."""
    a = st.actors[tid(nqn)]
    new = attrs.evolve(a.status, device=device, state="connected", connected=True)
    st.index.add(io(nqn, device))
    return handle(st, IocUpdate(new, a.generation))[1]


def removed(dev: str) -> Uevent:
    return Uevent("remove", f"/devices/virtual/nvme-fabrics/ctl/{dev}")


def listed(st: ConnectorState) -> set[str]:
    shown = snapshot(st)
    return {s.tid.subsysnqn for s in (shown if shown is not None else st.order)}


def with_b_going() -> ConnectorState:
    """a and b connected (nvme1, nvme2); b's page entry gone: its disconnect is in flight."""
    st = state()
    handle(st, page(DC1, "a", "b"))
    connected(st, "a", "nvme1")
    connected(st, "b", "nvme2")
    _, fx = handle(st, page(DC1, "a"))
    assert fx == [StopIoc(tid("b"), known="nvme2"), Disconnect("nvme2", tid("b"), fx[1].reason)]
    return st


def test_a_device_being_disconnected_is_never_disconnected_twice() -> None:
    st = with_b_going()
    # everything that could decide about nvme2 again while its disconnect runs
    again = [
        DcRemoved(DC1),
        page(DC1),
        Reconfigure(StacdConfigChanged(st.config, HOSTNQN, HOSTID)),
        KernelResync((io("a", "nvme1"), io("b", "nvme2"))),
    ]
    for msg in again:
        _, fx = handle(st, msg)
        assert "nvme2" not in [d.device for d in of(Disconnect, fx)], msg
    assert st.disconnecting == {"nvme2": tid("b"), "nvme1": tid("a")}  # a: DcRemoved's
    handle(st, DisconnectDone("nvme2", gone=True))
    assert st.disconnecting == {"nvme1": tid("a")}
    assert st.disconnecting_tids == {tid("a"): {"nvme1"}}
    assert "nvme2" not in st.index.by_device  # deleted: out of the index before its uevent


def test_the_audit_does_not_disconnect_twice_either() -> None:
    st = state(f"[I/O controller connection management]\ndisconnect-scope={AUDIT}\n")
    handle(st, Begin((io("stranger", "nvme7"),)))
    _, fx = handle(st, AuditDue())
    assert [d.device for d in of(Disconnect, fx)] == ["nvme7"]
    for msg in (AuditDue(), KernelResync((io("stranger", "nvme7"),)), page(DC1)):
        _, fx = handle(st, msg)
        assert not of(Disconnect, fx), msg


def test_wanted_again_while_disconnecting_connects_anew_only_after_it_ends() -> None:
    st = with_b_going()
    assert listed(st) == {"a"}
    _, fx = handle(st, page(DC1, "a", "b"))
    assert not of(StartIoc, fx) and not of(Disconnect, fx)  # neither adopts the dying one
    assert st.deferred == {"nvme2": {tid("b")}}
    assert listed(st) == {"a"}  # not shown as connected to the device being deleted
    _, fx = handle(st, DisconnectDone("nvme2", gone=True))
    (start,) = of(StartIoc, fx)
    assert start.wanted.tid == tid("b") and start.adopt is None  # a fresh connect
    assert st.deferred == {} and listed(st) == {"a", "b"}


def test_wanted_again_and_the_disconnect_failed_adopts_the_old_controller() -> None:
    st = with_b_going()
    handle(st, page(DC1, "a", "b"))
    _, fx = handle(st, DisconnectDone("nvme2", gone=False))
    (start,) = of(StartIoc, fx)
    assert start.adopt is not None and start.adopt.device == "nvme2"
    assert st.owner["nvme2"] == tid("b")


def test_a_failed_disconnect_is_left_to_the_usual_rules() -> None:
    """Not retried by itself: the controller stays in the index, unowned, as it did when the
    disconnect ran inline (the audit scope would try again; the default scope does not)."""
    st = with_b_going()
    _, fx = handle(st, DisconnectDone("nvme2", gone=False))
    assert fx == [] and "nvme2" in st.index.by_device and "nvme2" not in st.owner
    _, fx = handle(st, page(DC1, "a"))
    assert fx == []


def test_unwanted_again_before_the_end_starts_nothing() -> None:
    st = with_b_going()
    handle(st, page(DC1, "a", "b"))
    handle(st, page(DC1, "a"))
    _, fx = handle(st, DisconnectDone("nvme2", gone=True))
    assert fx == []


def test_another_dc_listing_it_waits_as_well() -> None:
    st = with_b_going()
    _, fx = handle(st, page(DC2, "b"))
    assert not of(StartIoc, fx)
    _, fx = handle(st, DisconnectDone("nvme2", gone=True))
    assert [s.wanted.tid for s in of(StartIoc, fx)] == [tid("b")]


def test_the_old_devices_late_remove_is_not_taken_for_its_namesake() -> None:
    """The kernel hands the freed nvme2 to b's new connect; the old nvme2's 'remove' uevent
    arrives after that: b keeps its new controller (no DeviceRemoved, no reconnect)."""
    st = with_b_going()
    handle(st, page(DC1, "a", "b"))
    handle(st, DisconnectDone("nvme2", gone=True))
    connected(st, "b", "nvme2")
    _, fx = handle(st, removed("nvme2"))
    assert fx == [] and st.owner["nvme2"] == tid("b")
    assert "nvme2" in st.index.by_device
    _, fx = handle(st, removed("nvme2"))  # the new one's own removal is b's business
    assert fx == [TellIoc(tid("b"), DeviceRemoved("nvme2"))]


def test_a_remove_before_the_end_is_not_expected_again() -> None:
    st = with_b_going()
    handle(st, removed("nvme2"))
    handle(st, page(DC1, "a", "b"))
    handle(st, DisconnectDone("nvme2", gone=True))
    connected(st, "b", "nvme2")
    _, fx = handle(st, removed("nvme2"))
    assert fx == [TellIoc(tid("b"), DeviceRemoved("nvme2"))]


def test_an_add_or_a_resync_ends_the_wait_for_a_lost_remove() -> None:
    for after in (
        Uevent("add", "/devices/virtual/nvme-fabrics/ctl/nvme2"),
        KernelResync((io("a", "nvme1"), io("b", "nvme2"))),
    ):
        st = with_b_going()
        handle(st, page(DC1, "a", "b"))
        handle(st, DisconnectDone("nvme2", gone=True))
        handle(st, after)
        assert st.departed == set()
        connected(st, "b", "nvme2")
        _, fx = handle(st, removed("nvme2"))
        assert fx == [TellIoc(tid("b"), DeviceRemoved("nvme2"))], after


def test_a_done_for_a_device_not_in_flight_is_ignored() -> None:
    st = with_b_going()
    _, fx = handle(st, DisconnectDone("nvme9", gone=True))
    assert fx == [] and st.disconnecting == {"nvme2": tid("b")}


def test_a_thousand_removals_at_once_each_go_once() -> None:
    st = state()
    nqns = [f"s{i}" for i in range(1000)]
    handle(st, page(DC1, *nqns))
    for i, n in enumerate(nqns):
        connected(st, n, f"nvme{i}")
    _, fx = handle(st, DcRemoved(DC1))
    assert sorted(d.device for d in of(Disconnect, fx)) == sorted(f"nvme{i}" for i in range(1000))
    assert listed(st) == set()
    _, fx = handle(st, page(DC1, *nqns))  # all back at once: each waits for its own
    assert not of(StartIoc, fx) and len(st.deferred) == 1000
    for i in range(1000):
        _, fx = handle(st, DisconnectDone(f"nvme{i}", gone=True))
        assert [s.wanted.tid for s in of(StartIoc, fx)] == [tid(nqns[i])]
    assert st.disconnecting == {} and st.deferred == {}


# --- any interleaving ------------------------------------------------------------------------

POOL = ("a", "b")


class World:
    """The core plus a toy kernel (lowest free name first) and the disconnects in flight, as
    the shell would see them; checks the rules on every effect."""

    def __init__(self, scope: str = "only-stas-connections") -> None:
        self.st = state(f"[I/O controller connection management]\ndisconnect-scope={scope}\n")
        self.kernel: dict[str, str] = {}  # device -> subsystem
        self.flight: dict[str, str] = {}  # device -> subsystem, Disconnect issued, no Done yet
        self.owed: list[str] = []  # 'remove' uevents the kernel still has to deliver

    def apply(self, msg) -> None:
        _, fx = handle(self.st, msg)
        for e in fx:
            if isinstance(e, Disconnect):
                assert e.device not in self.flight, f"second disconnect of {e.device}"
                self.flight[e.device] = self.kernel.get(e.device, "?")
            if isinstance(e, StartIoc):
                nqn = e.wanted.tid.subsysnqn
                assert nqn not in self.flight.values(), f"{nqn} started while its old one goes"
                assert e.adopt is None or e.adopt.device not in self.flight
        assert set(self.st.disconnecting) == set(self.flight)
        shown = {s.device for s in self.st.order if s.connected}
        assert not shown & set(self.flight), "ls shows a device being disconnected"

    def connect(self, nqn: str) -> None:
        a = self.st.actors.get(tid(nqn))
        if a is None or a.status.connected:
            return
        device = next(f"nvme{i}" for i in range(99) if f"nvme{i}" not in self.kernel)
        self.kernel[device] = nqn
        connected(self.st, nqn, device)
        self.apply(Uevent("add", f"/devices/virtual/nvme-fabrics/ctl/{device}"))

    def done(self, i: int, gone: bool) -> None:
        if not self.flight:
            return
        device = sorted(self.flight)[i % len(self.flight)]
        del self.flight[device]
        if gone and device in self.kernel:
            del self.kernel[device]
            self.owed.append(device)
        self.apply(DisconnectDone(device, gone=gone and device not in self.kernel))

    def deliver(self) -> None:
        if self.owed:
            self.apply(removed(self.owed.pop(0)))


STEPS = (
    "page:a", "page:b", "page:ab", "page:", "dc-gone", "connect", "done", "fail", "uevent", "audit",
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["only-stas-connections", AUDIT]), st.lists(st.sampled_from(STEPS), max_size=30)
)
def test_any_interleaving_keeps_the_rules(scope: str, steps: list[str]) -> None:
    """Pages, a DC's removal, connects, disconnects ending (deleted or refused) and late
    'remove' uevents in any order: never a second disconnect of a device in flight, never a
    start (or adoption) that would meet a controller being disconnected, never a device being
    disconnected shown in ls; once all have ended, every wanted subsystem has its actor."""
    w = World(scope)
    for step in steps:
        kind, _, arg = step.partition(":")
        if kind == "page":
            w.apply(page(DC1, *arg))
        elif kind == "dc-gone":
            w.apply(DcRemoved(DC1))
        elif kind == "connect":
            for nqn in POOL:
                w.connect(nqn)
        elif kind in ("done", "fail"):
            w.done(0, kind == "done")
        elif kind == "audit":
            w.apply(AuditDue())
        else:
            w.deliver()
    while w.flight:
        w.done(0, True)
    assert set(w.st.actors) == set(w.st.listing) and w.st.deferred == {}
