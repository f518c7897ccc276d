"""DC actor + UserspaceBackend against the userspace simulator over loopback."""

from __future__ import annotations

import logging
import math
import random
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import attrs
import pytest
import trio
import trio.testing
from sim_faults import Faults
from sim_hostile import open_hostile_proxy
from sim_server import Simulator, open_simulator

from stas.actors.dc import DcSettings, run_dc_actor
from stas.actors.dc_backend import (
    DEFAULT_KATO_S,
    UserspaceBackend,
    kato_ms_from,
    pleo_from,
)
from stas.messages import WELL_KNOWN_DISC_NQN, DcStatus, DcUpdate, DcWanted, Tid
from stas.nvme.errors import DiscoveryError
from stas.nvme.host_ops import SessionOptions
from stas.nvme.hostid import HostIdentity
from tests.helpers import sim as sim_helpers
from tests.helpers.entries import dc_tid
from tests.helpers.sim import DELL, SEED_SUBSYSTEMS, host_identity

HOST = host_identity("6b1f4a9e-0c1d-4e2f-8a3b-5c6d7e8f9a0b", hostname="dc-actor-test")
SETTINGS = DcSettings(jitter=0.0)
conf = sim_helpers.conf  # the parsed seed nvmet.conf (a fixture)


@attrs.define
class Watch:
    """Updates from a running actor, with a way to wait for one that matches."""

    recv: trio.MemoryReceiveChannel[DcUpdate]
    seen: list[DcUpdate] = attrs.Factory(list)

    async def until(self, pred: Callable[[DcUpdate], bool], timeout: float = 5.0) -> DcUpdate:
        with trio.fail_after(timeout):
            async for update in self.recv:
                self.seen.append(update)
                if pred(update):
                    return update
        raise AssertionError("update channel closed")


@asynccontextmanager
async def actor(
    sim: Simulator,
    params: dict[str, str] | None = None,
    settings: DcSettings = SETTINGS,
    endpoint: tuple[str, int] | None = None,
    identity: HostIdentity = HOST,
    **tid: str,
) -> AsyncIterator[Watch]:
    host, port = endpoint or sim.endpoint(1)
    wanted = DcWanted(
        tid=dc_tid(host, str(port), **{"host_nqn": "", **tid}),
        origin="configured",
        params=params or {},
    )
    send, recv = trio.open_memory_channel[DcUpdate](math.inf)
    backend = UserspaceBackend(identity)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: run_dc_actor(
                wanted, send, backend=backend, settings=settings, rng=random.Random(0)
            )
        )
        yield Watch(recv)
        nursery.cancel_scope.cancel()


async def test_a_non_ascii_symname_registers(conf, autojump_clock) -> None:
    """stasadm set-symname café-host, then stafd: the DC registered with the name instead of
    its actor crashing until the supervisor marked it failed (the codec took ASCII only)."""
    host = attrs.evolve(HOST, symname="café-host")
    async with open_simulator(conf, ephemeral=True) as sim, actor(sim, identity=host) as watch:
        first = await watch.until(connected_with_pages)
        assert first.status.registered
        assert sim.registrations[HOST.hostnqn].data.entries[0].symname == "café-host"


def subnqns(status: DcStatus) -> list[str]:
    return [d["subnqn"] for d in status.dlpes()]


def connected_with_pages(update: DcUpdate) -> bool:
    return update.status.state == "connected" and bool(update.status.log_pages)


async def test_actor_publishes_seed_and_follows_an_aen(conf, autojump_clock) -> None:
    async with open_simulator(conf, ephemeral=True) as sim:
        async with actor(sim) as watch:
            first = await watch.until(connected_with_pages)
            assert first.log_pages_changed
            status = first.status
            assert subnqns(status) == list(SEED_SUBSYSTEMS)
            assert status.genctr == sim.model.genctr
            assert status.dctype == "ddc" and status.cntrltype == "discovery"
            assert status.registered and HOST.hostnqn in sim.registrations
            # no kernel device: upstream's 'nvme?', the socket pair in the detail
            assert status.device == "nvme?"
            assert re.fullmatch(r"userspace tcp \[::1\]:\d+ -> \[::1\]:\d+", status.link)

            await sim.unlink(1, "klingons")
            update = await watch.until(lambda u: u.log_pages_changed, timeout=1.0)
            assert subnqns(update.status) == [DELL, "starfleet"]
            assert update.status.genctr == sim.model.genctr
        # Leaving the actor deregisters (DIM) and shuts the controller down.
        with trio.fail_after(5):
            while sim.registrations or sim.connections:
                await trio.sleep(0.01)


async def test_simulator_going_away(conf, autojump_clock) -> None:
    send, recv = trio.open_memory_channel[DcUpdate](math.inf)
    watch = Watch(recv)
    backend = UserspaceBackend(HOST)
    async with trio.open_nursery() as nursery:
        async with open_simulator(conf, ephemeral=True) as sim:
            host, port = sim.endpoint(1)
            wanted = DcWanted(dc_tid(host, str(port), host_nqn=""), "configured")
            nursery.start_soon(
                lambda: run_dc_actor(wanted, send, backend=backend, settings=SETTINGS)
            )
            await watch.until(connected_with_pages)
        # The simulator's block has ended: its listener and our connection are closed.
        down = await watch.until(lambda u: u.status.state == "disconnected")
        assert not down.log_pages_changed
        assert subnqns(down.status) == list(SEED_SUBSYSTEMS)
        assert down.status.device == "nvme?" and down.status.last_error
        retry = await watch.until(lambda u: u.status.state == "backoff", timeout=10)
        assert "refused" in retry.status.last_error
        assert retry.status.log_pages == down.status.log_pages
        nursery.cancel_scope.cancel()


async def test_per_controller_host_nqn_is_used(conf, autojump_clock) -> None:
    other = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555"
    async with open_simulator(conf, ephemeral=True) as sim, actor(sim, host_nqn=other) as watch:
        await watch.until(connected_with_pages)
        assert set(sim.registrations) == {other}


async def test_refused_connection_is_reported_not_raised(conf, autojump_clock) -> None:
    async with open_simulator(conf, ephemeral=True) as sim:
        host, port = sim.endpoint(1)
    wanted = DcWanted(dc_tid(host, str(port), host_nqn=""), "configured")
    send, recv = trio.open_memory_channel[DcUpdate](math.inf)
    watch = Watch(recv)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: run_dc_actor(wanted, send, backend=UserspaceBackend(HOST), settings=SETTINGS)
        )
        update = await watch.until(lambda u: u.status.state == "backoff")
        assert update.status.last_error == f"connection to [{host}]:{port} refused"
        nursery.cancel_scope.cancel()


async def test_non_tcp_transport_is_refused_clearly() -> None:
    backend = UserspaceBackend(HOST)
    tid = Tid("rdma", "192.0.2.1", "4420", WELL_KNOWN_DISC_NQN)
    with pytest.raises(DiscoveryError, match="transport 'rdma' is not supported"):
        async with backend.connect(tid, {}, persistent=True):
            pass  # pragma: no cover


def test_session_options_from_params() -> None:
    backend = UserspaceBackend(HOST, SessionOptions(command_timeout=3.0))
    opts = backend.options_for({"kato": "12", "pleo": "disabled"}, persistent=True, where="x")
    assert (opts.kato_ms, opts.pleo, opts.persistent, opts.command_timeout) == (
        12000, False, True, 3.0,
    )  # fmt: skip
    assert backend.options_for({}, persistent=False, where="x").kato_ms == 30000
    other = Tid("tcp", "::1", "8009", "", host_nqn="nqn.other")
    assert backend.host_for(other).hostnqn == "nqn.other"
    assert backend.host_for(other).hostid == HOST.hostid
    assert backend.host_for(attrs.evolve(other, host_nqn="")) == HOST


@pytest.mark.parametrize("raw", ["-1", "abc", "1e3", str(2**40)])
def test_bad_kato_falls_back_with_a_warning(raw: str, caplog) -> None:
    assert kato_ms_from({"kato": raw}, "(tcp, ::1, 8009)") == DEFAULT_KATO_S * 1000
    assert f"kato={raw!r} is not a number of seconds" in caplog.text


def test_pleo_words() -> None:
    assert pleo_from({"pleo": "Enabled"}, False) is True
    assert pleo_from({"pleo": "disabled"}, True) is False
    assert pleo_from({"pleo": "maybe"}, True) is True
    assert pleo_from({}, False) is False


# --- a DC that accepts and then breaks every connection (issue 13 item 3) ---------------------


async def test_connect_then_fail_climbs_the_ladder_warns_once_and_sums_up(
    conf, autojump_clock, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger="stas.actors.dc")
    bad = Faults(oversize_c2h=True)
    async with open_simulator(conf, ephemeral=True, faults=bad) as sim, actor(sim):
        await trio.sleep(100)
        # 0, 3, 8, 18, 38, 78 s: the same ladder as refused connects, not every 3 s forever
        assert sim.accepted == 6
        await trio.sleep(500)
        assert sim.accepted == 14  # ... 138, 198, ..., 558: capped at one per minute
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    ours = [w for w in warnings if "C2HData" in w]
    assert len(ours) == 1 and "connection lost:" in ours[0]
    assert "exceeds the" in ours[0] and "reconnecting in 3 s" in ours[0]
    summaries = [r.getMessage() for r in caplog.records if " failed " in r.getMessage()]
    assert len(summaries) == 1
    assert re.fullmatch(
        r"\(tcp, ::1, \d+, [^)]+\) failed 10 times in 318 s: .*C2HData.*", summaries[0]
    )
    connected = [r for r in caplog.records if ": connected" in r.getMessage()]
    assert [r.levelno for r in connected][:2] == [logging.INFO, logging.DEBUG]


# --- stafd.conf connection settings on the wire (issue 13 item 5, issue 9 item 3) -------------


async def _connect_once(conf, settings: DcSettings, params: dict[str, str] | None = None):
    async with open_simulator(conf, ephemeral=True) as sim, actor(sim, params, settings) as w:
        await w.until(connected_with_pages)
        return sim.history[-1]


async def test_defaults_on_the_wire(conf, autojump_clock) -> None:
    seen = await _connect_once(conf, SETTINGS)
    assert seen.connect_kato_ms == 30000
    assert seen.connect_cattr == 0
    assert seen.digests == (False, False)
    assert set(seen.log_page_lsps) == {2}  # PLEO: the simulator is a DDC advertising PLEOS


async def test_global_settings_on_the_wire(conf, autojump_clock) -> None:
    glob = {"kato": "7", "hdr-digest": "true", "data-digest": "true", "pleo": "disabled",
            "disable-sqflow": "true"}  # fmt: skip
    seen = await _connect_once(conf, attrs.evolve(SETTINGS, connection=glob))
    assert seen.connect_kato_ms == 7000
    assert seen.connect_cattr == 1 << 2  # SQ flow control disabled, as Linux asks
    assert seen.digests == (True, True)
    assert set(seen.log_page_lsps) == {0}


async def test_per_controller_settings_override_global_on_the_wire(conf, autojump_clock) -> None:
    glob = {"kato": "7", "hdr-digest": "true", "data-digest": "false"}
    mine = {"kato": "9", "hdr-digest": "false", "data-digest": "true"}
    seen = await _connect_once(conf, attrs.evolve(SETTINGS, connection=glob), mine)
    assert seen.connect_kato_ms == 9000
    assert seen.digests == (False, True)


# --- a CDC that refuses DIM; a DC that stops answering Keep Alive (fault campaign) -----------


async def test_cdc_refusing_dim_is_kept_and_served(conf, autojump_clock, caplog) -> None:
    """Upstream logs the refusal and uses the DC; we used to retry the connect every few s."""
    caplog.set_level(logging.INFO, logger="stas")
    async with (
        open_simulator(conf, ephemeral=True, dctype="cdc", faults=Faults(dim_reject=1)) as sim,
        actor(sim) as watch,
    ):
        first = await watch.until(connected_with_pages)
        assert subnqns(first.status) == list(SEED_SUBSYSTEMS)
        assert first.status.dctype == "cdc" and not first.status.registered
        await sim.unlink(1, "klingons")  # AENs are followed
        update = await watch.until(lambda u: u.log_pages_changed, timeout=1.0)
        assert subnqns(update.status) == [DELL, "starfleet"]
        await trio.sleep(59)
        assert sim.accepted == 1  # one connection, kept
        await trio.sleep(2)  # the slow retry at 60 s is accepted (the fault was one refusal)
        assert HOST.hostnqn in sim.registrations
        await sim.link(1, "klingons")
        update = await watch.until(lambda u: u.log_pages_changed, timeout=1.0)
        assert update.status.registered
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "DIM registration refused" in warnings[0] and "(status 0x4002)" in warnings[0]


async def test_unanswered_keep_alive_loses_the_dc_within_kato_in_one_line(
    conf, autojump_clock, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="stas")
    async with (
        open_simulator(conf, ephemeral=True) as sim,
        open_hostile_proxy(sim.endpoint(1), "ka-unanswered") as proxy,
        actor(sim, {"kato": "2"}, endpoint=("::1", proxy.port)) as watch,
    ):
        await watch.until(connected_with_pages)
        up = trio.current_time()
        lost = await watch.until(lambda u: u.status.state == "disconnected", timeout=30)
        assert trio.current_time() - up <= 1.0 + 2.0 + 0.1
    reason = f"connection to [::1]:{proxy.port} lost: no answer to Keep Alive within 2 s (KATO 2 s)"
    assert lost.status.last_error == reason
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].endswith(f": connection lost: {reason}; reconnecting in 3 s")
