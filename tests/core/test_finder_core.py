"""The finder's pure core without Trio: decisions as (state, effects), checked step by step and
against a model of the supervisor with hypothesis."""

from __future__ import annotations

import copy
import logging

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from stas.actors import finder_core as core
from stas.messages import DcStatus, Tid
from stas.messages_stafd import (
    AddressesResolved,
    AddressProbed,
    DcStopped,
    DcUpdate,
    MdnsServiceDown,
    MdnsServiceUp,
)
from stas.nvme.logpage import LogPageEntry
from tests.helpers.config import stafd_config
from tests.helpers.effects import of

HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-4333-8444-555555555555"
WK = "nqn.2014-08.org.nvmexpress.discovery"


def ctrls(*lines: str) -> str:
    return "[Controllers]\n" + "".join(f"controller=transport=tcp;traddr={x}\n" for x in lines)


def tid(addr: str) -> Tid:
    return Tid("tcp", addr, "8009", WK, "", "", HOSTNQN)


def referral(addr: str) -> LogPageEntry:
    return LogPageEntry(3, 1 if "." in addr else 2, 1, 0, 1, 0xFFFF, 32, 0, "8009", WK, addr)


def loaded(text: str) -> core.ConfigLoaded:
    return core.ConfigLoaded(stafd_config(text), HOSTNQN)


def boot(text: str, answers: dict[str, tuple[str, ...]] | None = None):
    """A state after start: config loaded, every name answered as ``answers`` says."""
    s = core.initial_state(stafd_config(""), HOSTNQN)
    s, effects = core.handle(s, loaded(text))
    for r in of(core.ResolveAddresses, effects):
        addrs = (answers or {}).get(r.base.traddr, (r.base.traddr,))
        s, _ = core.handle(s, AddressesResolved(r.generation, r.base, addrs))
    return s


def test_the_first_reconcile_waits_for_names_then_starts_the_dcs() -> None:
    s = core.initial_state(stafd_config(""), HOSTNQN)
    s, effects = core.handle(s, loaded(ctrls("array.example")))
    (ask,) = of(core.ResolveAddresses, effects)
    assert ask.base.traddr == "array.example"
    s, effects = core.handle(s, core.Reconcile(0.0))
    assert effects == [] and not s.booted, "nothing is decided before the name is known"
    s, _ = core.handle(s, AddressesResolved(ask.generation, ask.base, ("10.0.0.7",)))
    s, effects = core.handle(s, core.Reconcile(1.0))
    assert [e.wanted.tid for e in of(core.StartDc, effects)] == [tid("10.0.0.7")]
    (pub,) = of(core.PublishSnapshot, effects)
    assert [dc.tid for dc in pub.snapshot.dcs] == [tid("10.0.0.7")]


def test_an_answer_for_a_replaced_configuration_is_dropped() -> None:
    s = boot(ctrls("10.0.0.1"))
    s, effects = core.handle(s, loaded(ctrls("array.example")))
    (old,) = of(core.ResolveAddresses, effects)
    s, _ = core.handle(s, loaded(ctrls("array.example")))  # reloaded again meanwhile
    s, _ = core.handle(s, AddressesResolved(old.generation, old.base, ("10.0.0.9",)))
    assert s.choices == {} and old.base in s.resolving


def test_a_reload_keeps_a_resolved_entry_working_while_its_name_is_resolved_again() -> None:
    s = boot(ctrls("array.example"), {"array.example": ("10.0.0.7",)})
    s, _ = core.handle(s, core.Reconcile(0.0))
    s, effects = core.handle(s, loaded(ctrls("array.example")))
    assert of(core.ResolveAddresses, effects)
    s, effects = core.handle(s, core.Reconcile(1.0))
    assert not of(core.StopDc, effects) and set(s.running) == {tid("10.0.0.7")}


def test_several_addresses_are_probed_and_the_answering_one_is_used() -> None:
    s = core.initial_state(stafd_config(""), HOSTNQN)
    s, effects = core.handle(s, loaded(ctrls("array.example")))
    (ask,) = of(core.ResolveAddresses, effects)
    s, effects = core.handle(s, AddressesResolved(ask.generation, ask.base, ("10.0.0.1", "fd::1")))
    (probe,) = effects
    assert probe == core.ProbeAddresses(ask.base, ("10.0.0.1", "fd::1"), 8009, "")
    s, effects = core.handle(s, core.Reconcile(0.0))
    assert effects == [], "the first reconcile waits for the probe too"
    s, effects = core.handle(s, AddressProbed(ask.base, "fd::1", 0.0))
    assert effects == [
        core.LogLine(logging.INFO, "array.example: using fd::1 (answers on port 8009)")
    ]
    s, effects = core.handle(s, core.Reconcile(0.0))
    assert [e.wanted.tid for e in of(core.StartDc, effects)] == [tid("fd::1")]
    # still unreachable 30 s later (two attempts): probed again, once
    down = DcStatus(tid=tid("fd::1"), origin="configured", connect_attempts=2)
    s, _ = core.handle(s, DcUpdate(down))
    s, effects = core.handle(s, core.Reconcile(29.0))
    assert not of(core.ProbeAddresses, effects)
    s, effects = core.handle(s, core.Reconcile(30.0))
    assert len(of(core.ProbeAddresses, effects)) == 1
    s, effects = core.handle(s, core.Reconcile(31.0))
    assert not of(core.ProbeAddresses, effects), "one probe in flight at a time"


def test_a_restart_starts_the_new_actor_only_once_the_old_one_stopped() -> None:
    s = boot(ctrls("10.0.0.1"))
    s, _ = core.handle(s, core.Reconcile(0.0))
    t = tid("10.0.0.1")
    s, _ = core.handle(s, DcUpdate(DcStatus(tid=t, origin="configured", genctr=3), True))
    kato = "[Controllers]\ncontroller=transport=tcp;traddr=10.0.0.1;kato=10\n"
    s, effects = core.handle(s, loaded(kato))
    for r in of(core.ResolveAddresses, effects):
        s, _ = core.handle(s, AddressesResolved(r.generation, r.base, ("10.0.0.1",)))
    s, effects = core.handle(s, core.Reconcile(1.0))
    assert of(core.StopDc, effects) == [core.StopDc(t)] and not of(core.StartDc, effects)
    # the old actor's last words are not taken for the new one's
    s, _ = core.handle(s, DcUpdate(DcStatus(tid=t, origin="configured", genctr=99), True))
    s, effects = core.handle(s, core.Reconcile(2.0))
    assert effects == []
    s, effects = core.handle(s, DcStopped(t))
    (start,) = of(core.StartDc, effects)
    assert start.wanted.params == {"kato": "10"} and start.initial is not None
    assert start.initial.genctr == 3


def test_a_dc_wanted_again_while_it_stops_is_started_after_the_stop() -> None:
    s = boot(ctrls("10.0.0.1"))
    s, _ = core.handle(s, core.Reconcile(0.0))
    s, effects = core.handle(s, loaded(""))
    s, effects = core.handle(s, core.Reconcile(1.0))
    assert of(core.StopDc, effects) == [core.StopDc(tid("10.0.0.1"))]
    s, effects = core.handle(s, loaded(ctrls("10.0.0.1")))
    for r in of(core.ResolveAddresses, effects):
        s, _ = core.handle(s, AddressesResolved(r.generation, r.base, ("10.0.0.1",)))
    s, effects = core.handle(s, core.Reconcile(2.0))
    assert not of(core.StartDc, effects) and not of(core.StopDc, effects)
    s, effects = core.handle(s, DcStopped(tid("10.0.0.1")))
    assert [e.wanted.tid for e in of(core.StartDc, effects)] == [tid("10.0.0.1")]


def test_an_unknown_message_is_a_warning() -> None:
    s = core.initial_state(stafd_config(""), HOSTNQN)
    s2, effects = core.handle(s, 42)
    assert s2 is s
    assert effects == [core.LogLine(logging.WARNING, "finder: unexpected message 'int' ignored")]


# --- a model: the core against a supervisor that stops asynchronously -------------------------

ADDRS = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "array.example"]
POOL = [tid(f"10.0.0.{i}") for i in range(1, 7)]
CONFIGS = [
    "",
    ctrls("10.0.0.1"),
    ctrls("10.0.0.1", "array.example"),
    "[Controllers]\ncontroller=transport=tcp;traddr=10.0.0.1;kato=10\n",
    ctrls("10.0.0.2") + "exclude=traddr=10.0.0.4\n",
    "[Service Discovery]\nzeroconf=disabled\n" + ctrls("10.0.0.3"),
    "[Discovery controller connection management]\nzeroconf-connections-persistence=5\n",
]

step = st.one_of(
    st.tuples(st.just("config"), st.sampled_from(CONFIGS)),
    st.tuples(st.just("up"), st.integers(0, 3), st.sampled_from(POOL)),
    st.tuples(st.just("down"), st.integers(0, 3)),
    st.tuples(
        st.just("update"),
        st.sampled_from(POOL),
        st.lists(st.sampled_from(POOL), max_size=3),
        st.booleans(),
    ),
    st.tuples(st.just("answer"), st.integers(0, 10)),
    st.tuples(st.just("time"), st.integers(0, 10)),
)


class Model:
    """Plays the shell: executes effects like the supervisor would, answers runners late."""

    def __init__(self) -> None:
        self.state = core.initial_state(stafd_config(""), HOSTNQN)
        self.alive: set[Tid] = set()
        self.pending: list[object] = []  # runner answers not delivered yet
        self.now = 0.0
        self.published: tuple = ()

    def feed(self, msg: object) -> None:
        before = copy.deepcopy(self.state)
        new, effects = core.handle(self.state, msg)
        assert self.state == before, "handle changed its input state"
        self.state = new
        for e in effects:
            match e:
                case core.StartDc(wanted=w):
                    assert w.tid not in self.alive, f"two actors for {w.tid}"
                    self.alive.add(w.tid)
                case core.StopDc(tid=t):
                    assert t in self.alive
                    self.pending.append(DcStopped(t))
                case core.ResolveAddresses(generation=g, base=b):
                    addrs = ("10.0.0.5", "10.0.0.6") if b.traddr == "array.example" else (b.traddr,)
                    self.pending.append(AddressesResolved(g, b, addrs))
                case core.ProbeAddresses(base=b, addresses=a):
                    self.pending.append(AddressProbed(b, a[-1], self.now))
                case core.PublishSnapshot(snapshot=snap):
                    self.published = tuple(dc.tid for dc in snap.dcs)

    def answer(self, i: int) -> None:
        if self.pending:
            msg = self.pending.pop(i % len(self.pending))
            if isinstance(msg, DcStopped):
                self.alive.discard(msg.tid)
            self.feed(msg)


@settings(max_examples=150)
@given(st.lists(step, max_size=40))
def test_the_core_never_runs_two_actors_for_a_dc_and_settles_on_the_wanted_set(steps) -> None:
    m = Model()
    m.feed(core.Restored({}))
    m.feed(loaded(""))
    for s in steps:
        match s:
            case ("config", text):
                m.feed(loaded(text))
            case ("up", k, t):
                m.feed(MdnsServiceUp(f"k{k}", attrs.evolve(t, host_nqn="")))
            case ("down", k):
                m.feed(MdnsServiceDown(f"k{k}"))
            case ("update", t, refs, connected):
                pages = tuple(referral(r.traddr) for r in refs)
                m.feed(DcUpdate(DcStatus(tid=t, origin="x", connected=connected, log_pages=pages)))
            case ("answer", i):
                m.answer(i)
            case ("time", dt):
                m.now += dt
        m.feed(core.Reconcile(m.now))
    while m.pending:  # every runner answers: the core settles
        m.answer(0)
        m.feed(core.Reconcile(m.now))
    s = m.state
    want, _ = core.wanted(s)
    assert set(s.running) == set(want) == m.alive
    assert set(s.statuses) == set(s.running) and not s.stopping
    assert m.published == tuple(sorted(s.running)) or (not s.running and m.published == ())
    assert core.next_deadline(s) >= m.now or not s.silent_since
