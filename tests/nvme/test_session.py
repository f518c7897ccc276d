"""DiscoverySession against the userspace simulator over loopback TCP."""

from __future__ import annotations

import logging
import struct
import uuid
from contextlib import AbstractAsyncContextManager as AsyncContextManager
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from nvmet_config import NvmetConf, Port, Subsystem
from sim_faults import Faults
from sim_hostile import open_hostile_proxy
from sim_server import Simulator, open_simulator

from stas.nvme.commands import AEN_DISCOVERY_LOG_CHANGED
from stas.nvme.errors import (
    ConnectionLost,
    ConnectionRefused,
    DiscoveryError,
    ProtocolError,
    StepTimeout,
)
from stas.nvme.host_ops import (
    NQN_UUID_PREFIX,
    HostIdentity,
    SessionOptions,
    default_host_identity,
    format_address,
    read_consistent_log,
)
from stas.nvme.identify import DcType
from stas.nvme.logpage import Limits
from stas.nvme.session import DiscoverySession
from tests.helpers import sim as sim_helpers
from tests.helpers.net import closed_port
from tests.helpers.sim import DELL, host_identity

HOSTID = uuid.UUID("2a7f7ec4-5a2b-4d3c-9e0f-112233445566")
HOST = host_identity(str(HOSTID))
conf = sim_helpers.conf  # the parsed seed nvmet.conf (a fixture)
ONE_SHOT = SessionOptions(kato_ms=0)


def _dlpe(subnqn: str, port: int) -> dict[str, str]:
    return {
        "trtype": "tcp",
        "adrfam": "ipv6",
        "traddr": "::1",
        "trsvcid": str(port),
        "subnqn": subnqn,
        "subtype": "nvme",
        "treq": "not specified",
        "portid": "1",
        "cntlid": "65535",
        "asqsz": "32",
        "eflags": "0",
    }


def _session(
    sim: Simulator, options: SessionOptions = ONE_SHOT
) -> AsyncContextManager[DiscoverySession]:
    return DiscoverySession.open(*sim.endpoint(1), host=HOST, options=options)


def _sim_commands(caplog: pytest.LogCaptureFixture, name: str) -> int:
    """How many ``name`` commands the simulator answered (it logs one line per command)."""
    return sum(1 for r in caplog.records if r.name == "nvmet-sim" and f": {name}:" in r.message)


# --- the normal conversation --------------------------------------------------------------


async def test_seed_log_page_has_the_three_subsystems(conf: NvmetConf) -> None:
    async with open_simulator(conf, ephemeral=True) as sim:
        host, port = sim.endpoint(1)
        async with DiscoverySession.open(host, port, host=HOST, options=ONE_SHOT) as session:
            page = await session.get_log_page()
            assert session.peer_address == ("::1", port)
            assert session.local_address[0] == "::1"
            assert session.identify.dctype == DcType.DDC
            assert session.cntlid >= 1
    assert page.genctr == sim.model.genctr
    assert [e.to_dlpe() for e in page.entries] == [
        _dlpe("klingons", port),
        _dlpe(DELL, port),
        _dlpe("starfleet", port),
    ]


@pytest.mark.parametrize("dctype", ["ddc", "cdc"])
async def test_dim_registers_and_deregisters(conf: NvmetConf, dctype: str) -> None:
    async with open_simulator(conf, ephemeral=True, dctype=dctype) as sim:
        async with DiscoverySession.open(*sim.endpoint(1), host=HOST, options=ONE_SHOT) as s:
            assert s.registered
            reg = sim.registrations[HOST.hostnqn]
            assert reg.data.ename == "testhost"
            assert reg.data.entries[0].hostid == HOST.hostid
        assert sim.registrations == {}


async def test_no_dim_when_dctype_not_reported(conf: NvmetConf) -> None:
    async with open_simulator(conf, ephemeral=True, dctype="none") as sim, _session(sim) as s:
        assert not s.registered
        assert sim.registrations == {}
        assert len((await s.get_log_page()).entries) == 3


async def test_no_dim_when_registration_disabled(conf: NvmetConf) -> None:
    options = SessionOptions(kato_ms=0, register=False)
    async with open_simulator(conf, ephemeral=True) as sim, _session(sim, options) as s:
        assert not s.registered
        assert sim.registrations == {}


async def test_pleo_is_used_when_supported(conf: NvmetConf) -> None:
    options = SessionOptions(kato_ms=0, pleo=True)
    async with open_simulator(conf, ephemeral=True) as sim, _session(sim, options) as s:
        page = await s.get_log_page()
        assert s.supported is not None and s.supported.pleos
        assert page.dlpf & 0x02  # the simulator marks port-local answers
        assert len(page.entries) == 3


async def test_persistent_session_gets_aens(
    conf: NvmetConf, autojump_clock: trio.testing.MockClock
) -> None:
    options = SessionOptions(persistent=True)
    async with open_simulator(conf, ephemeral=True) as sim, _session(sim, options) as s:
        assert len((await s.get_log_page()).entries) == 3
        events = s.aens()
        await sim.unlink(1, "klingons")
        with trio.fail_after(5):
            aen = await anext(events)
        assert aen.encode() == AEN_DISCOVERY_LOG_CHANGED
        page = await s.get_log_page()
        assert [e.subnqn for e in page.entries] == [DELL, "starfleet"]
        with trio.move_on_after(2) as quiet:
            await anext(events)
        assert quiet.cancelled_caught, "only one AEN expected per change"
        await sim.link(1, "klingons")
        with trio.fail_after(5):
            aen = await anext(events)
        assert aen.is_discovery_log_change
        page = await s.get_log_page()
        assert [e.subnqn for e in page.entries] == ["klingons", DELL, "starfleet"]


async def test_genctr_moving_mid_read_still_gives_a_consistent_page(conf: NvmetConf) -> None:
    async with open_simulator(conf, ephemeral=True, faults=Faults(genctr_bump_on_read=2)) as sim:
        before = sim.model.genctr
        async with DiscoverySession.open(*sim.endpoint(1), host=HOST, options=ONE_SHOT) as s:
            page = await s.get_log_page()
        assert page.genctr == before + 2 == sim.model.genctr
        assert len(page.entries) == 3


async def test_genctr_moving_on_every_read_gives_up(conf: NvmetConf) -> None:
    faults = Faults(genctr_bump_on_read=1000)
    options = SessionOptions(kato_ms=0, max_genctr_retries=3)
    async with (
        open_simulator(conf, ephemeral=True, faults=faults) as sim,
        _session(sim, options) as s,
    ):
        with pytest.raises(DiscoveryError, match=r"kept changing \(GENCTR moved 4 times\)"):
            await s.get_log_page()


async def test_thousand_entries_are_read_in_chunks(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nvmet-sim")
    names = [f"nqn.2024-01.io.example:sub{i:04d}" for i in range(1000)]
    big = NvmetConf(
        ports=(Port(1, "tcp", "::1", "8009", "ipv6"),),
        subsystems=tuple(Subsystem(n, 1, (1,)) for n in names),
    )
    async with open_simulator(big, ephemeral=True) as sim, _session(sim) as s:
        page = await s.get_log_page()
    assert [e.subnqn for e in page.entries] == names
    # header, 1000 KiB of entries in 16 KiB commands (63), header again
    assert _sim_commands(caplog, "Get Log Page") == 65


# --- faults -------------------------------------------------------------------------------


async def test_nothing_listening_is_connection_refused() -> None:
    port = closed_port()
    with pytest.raises(ConnectionRefused) as info:
        async with DiscoverySession.open("::1", port, host=HOST, options=ONE_SHOT):
            pass
    assert str(info.value) == f"connection to [::1]:{port} refused"


async def test_dc_closing_at_once_is_connection_refused(conf: NvmetConf) -> None:
    async with open_simulator(conf, ephemeral=True, faults=Faults(refuse=True)) as sim:
        host, port = sim.endpoint(1)
        with pytest.raises(ConnectionRefused, match=r"\[::1\]:\d+ refused.*before ICResp"):
            async with DiscoverySession.open(host, port, host=HOST, options=ONE_SHOT):
                pass


async def test_drop_after_commands_names_the_step(conf: NvmetConf) -> None:
    # Connect, Property Get CAP, Property Get VS are answered; then the DC hangs up.
    async with open_simulator(conf, ephemeral=True, faults=Faults(drop_after_commands=3)) as sim:
        with pytest.raises(ConnectionLost, match=r"\[::1\]:\d+ .*during Property Set CC"):
            async with DiscoverySession.open(*sim.endpoint(1), host=HOST, options=ONE_SHOT):
                pass


async def test_drop_during_log_page_read(conf: NvmetConf) -> None:
    async with open_simulator(conf, ephemeral=True) as sim, _session(sim) as s:
        sim.set_faults(Faults(drop_after_commands=0))
        with pytest.raises(ConnectionLost, match="closed by peer during Get Log Page"):
            await s.get_log_page()


async def test_slow_dc_times_out_in_connect(
    conf: NvmetConf, autojump_clock: trio.testing.MockClock
) -> None:
    options = SessionOptions(kato_ms=0, command_timeout=10.0)
    async with open_simulator(conf, ephemeral=True, faults=Faults(delay_s=30)) as sim:
        with pytest.raises(StepTimeout) as info:
            async with DiscoverySession.open(*sim.endpoint(1), host=HOST, options=options):
                pass
    assert info.value.step == "Connect"
    assert str(info.value) == "timed out after 10 s waiting for Connect"


async def test_corrupt_log_page_is_a_protocol_error(conf: NvmetConf) -> None:
    async with open_simulator(conf, ephemeral=True, faults=Faults(corrupt_log_page=True)) as sim:
        host, port = sim.endpoint(1)
        async with DiscoverySession.open(host, port, host=HOST, options=ONE_SHOT) as s:
            with pytest.raises(ProtocolError) as info:
                await s.get_log_page()
    assert str(info.value).startswith(f"{format_address(host, port)}: ")
    assert "RECFMT 7" in str(info.value)


async def test_keep_alive_keeps_the_connection_up(
    conf: NvmetConf, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nvmet-sim")
    options = SessionOptions(kato_ms=10_000)
    async with open_simulator(conf, ephemeral=True) as sim, _session(sim, options) as s:
        await trio.sleep(60)
        assert sim.connections == 1
        assert len((await s.get_log_page()).entries) == 3
    assert 11 <= _sim_commands(caplog, "Keep Alive") <= 13


async def test_unanswered_keep_alive_is_noticed_within_kato(
    conf: NvmetConf, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Keep Alives go out every KATO/2 regardless; the first unanswered one ends it in KATO.

    The old loop waited for each answer for the 10 s command timeout and sent nothing
    meanwhile (the DC's own KATO then expired first and it hung up).
    """
    caplog.set_level(logging.INFO, logger="nvmet-sim")
    options = SessionOptions(kato_ms=2000, command_timeout=10.0, persistent=True)
    async with (
        open_simulator(conf, ephemeral=True) as sim,
        open_hostile_proxy(sim.endpoint(1), "ka-unanswered") as proxy,
        DiscoverySession.open("::1", proxy.port, host=HOST, options=options) as s,
    ):
        started = trio.current_time()
        with pytest.raises(ConnectionLost) as info:
            async for _ in s.aens():
                pass
        lost_after = trio.current_time() - started
        assert not s.alive
    assert lost_after <= 1.0 + 2.0 + 0.1  # first Keep Alive at KATO/2, unanswered for KATO
    assert str(info.value) == (
        f"connection to [::1]:{proxy.port} lost: no answer to Keep Alive within 2 s (KATO 2 s)"
    )
    assert _sim_commands(caplog, "Keep Alive") >= 2  # the next one went out meanwhile
    assert not any("keep-alive timeout" in r.getMessage() for r in caplog.records)


async def test_keep_alive_deadline_is_the_command_timeout_when_shorter(
    conf: NvmetConf, autojump_clock: trio.testing.MockClock
) -> None:
    options = SessionOptions(kato_ms=30_000, command_timeout=4.0, persistent=True)
    async with (
        open_simulator(conf, ephemeral=True) as sim,
        open_hostile_proxy(sim.endpoint(1), "ka-unanswered") as proxy,
        DiscoverySession.open("::1", proxy.port, host=HOST, options=options) as s,
    ):
        started = trio.current_time()
        with pytest.raises(ConnectionLost, match=r"within 4 s \(KATO 30 s\)"):
            async for _ in s.aens():
                pass
        assert 15.0 <= trio.current_time() - started <= 15.0 + 4.0 + 0.1


# --- DIM refused: the DC is still used (upstream behaviour) ---------------------------------


async def test_cdc_refusing_dim_is_still_read(
    conf: NvmetConf, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="stas")
    faults = Faults(dim_reject=1)
    async with (
        open_simulator(conf, ephemeral=True, dctype="cdc", faults=faults) as sim,
        _session(sim) as s,
    ):
        page = await s.get_log_page()
        assert not s.registered
        assert "Invalid Field" in s.registration_error
    assert len(page.entries) == 3
    assert sim.registrations == {}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "DIM registration refused" in warnings[0] and "status 0x4002" in warnings[0]
    assert "asking again" not in warnings[0]  # a one-shot session does not retry


async def test_refused_registration_is_asked_again_on_a_slow_backoff(
    conf: NvmetConf, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="stas")
    options = SessionOptions(kato_ms=10_000, persistent=True)
    faults = Faults(dim_reject=2)  # bring-up and the first retry are refused
    async with (
        open_simulator(conf, ephemeral=True, dctype="cdc", faults=faults) as sim,
        _session(sim, options) as s,
    ):
        assert len((await s.get_log_page()).entries) == 3
        await trio.sleep(59)
        assert not s.registered  # nothing before DIM_RETRY_FIRST_S
        await trio.sleep(2)
        assert not s.registered  # refused again at 60 s; next try 120 s later
        await trio.sleep(118)
        assert not s.registered
        await trio.sleep(2)  # 180 s after bring-up
        assert HOST.hostnqn in sim.registrations and s.registered
        assert s.registration_error == ""
        assert sim.connections == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "asking again in 60 s" in warnings[0].getMessage()
    assert any("DIM registration accepted" in r.getMessage() for r in caplog.records)
    assert sim.registrations == {}  # deregistered on the way out


# --- host identity ------------------------------------------------------------------------


def test_default_identity_from_etc_nvme(tmp_path: Path) -> None:
    (tmp_path / "nvme").mkdir()
    (tmp_path / "nvme" / "hostnqn").write_text("nqn.2014-08.org.nvmexpress:uuid:abc\n")
    (tmp_path / "nvme" / "hostid").write_text(f"{HOSTID}\n")
    ident = default_host_identity(tmp_path)
    assert ident.hostnqn == "nqn.2014-08.org.nvmexpress:uuid:abc"
    assert ident.hostid == HOSTID.bytes


def test_default_identity_derived_from_machine_id_is_stable(tmp_path: Path) -> None:
    (tmp_path / "machine-id").write_text("3d1219c7c4c5404aaa1f6d2a48adfda4\n")
    first, second = default_host_identity(tmp_path), default_host_identity(tmp_path)
    assert first == second
    assert first.hostnqn.startswith(NQN_UUID_PREFIX)
    derived = uuid.UUID(first.hostnqn.removeprefix(NQN_UUID_PREFIX))
    assert first.hostid == derived.bytes
    assert "3d1219c7" not in first.hostnqn  # the machine id itself is not disclosed


def test_default_identity_without_anything_is_random(tmp_path: Path) -> None:
    first, second = default_host_identity(tmp_path), default_host_identity(tmp_path)
    assert first.hostnqn != second.hostnqn
    assert uuid.UUID(first.hostnqn.removeprefix(NQN_UUID_PREFIX)).bytes == first.hostid


def test_host_identity_rejects_a_short_hostid() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        HostIdentity(hostnqn="nqn.x", hostid=b"short")


# --- the consistent read over arbitrary controller answers ---------------------------------


@settings(max_examples=200, deadline=None)
@given(header=st.binary(min_size=0, max_size=1024), body=st.binary(max_size=4096))
def test_log_read_of_arbitrary_bytes_is_a_page_or_a_clear_error(header: bytes, body: bytes) -> None:
    """Whatever a hostile DC answers, the host gets a page or ProtocolError/DiscoveryError."""

    async def read(offset: int, length: int, rae: bool) -> bytes:
        return header if offset == 0 else body[:length]

    async def run() -> object:
        return await read_consistent_log(
            read, where="[::1]:8009", chunk=4096, extended=False, limits=Limits(), max_retries=2
        )

    try:
        page = trio.run(run)
    except (ProtocolError, DiscoveryError) as exc:
        assert str(exc).startswith("[::1]:8009: ") or "[::1]:8009" in str(exc)
    else:
        assert len(page.entries) <= len(body) // 1024


async def test_log_read_refuses_huge_numrec_before_reading_entries() -> None:
    reads: list[tuple[int, int]] = []
    header = struct.pack("<QQH", 5, 1 << 40, 0).ljust(1024, b"\0")

    async def read(offset: int, length: int, rae: bool) -> bytes:
        reads.append((offset, length))
        return header

    with pytest.raises(ProtocolError, match="NUMREC 1099511627776 exceeds the limit of 8192"):
        await read_consistent_log(
            read, where="[::1]:8009", chunk=4096, extended=False, limits=Limits(), max_retries=2
        )
    assert reads == [(0, 1024)]


async def test_log_read_numrec_change_without_genctr_change_is_a_protocol_error() -> None:
    headers = [struct.pack("<QQH", 5, n, 0).ljust(1024, b"\0") for n in (1, 2)]

    async def read(offset: int, length: int, rae: bool) -> bytes:
        if offset:
            return bytes(length)
        return headers.pop(0)

    with pytest.raises(ProtocolError, match="NUMREC changed from 1 to 2 while GENCTR stayed 5"):
        await read_consistent_log(
            read, where="[::1]:8009", chunk=4096, extended=False, limits=Limits(), max_retries=2
        )


async def test_cancelled_caller_still_deregisters(
    conf: NvmetConf, autojump_clock: trio.testing.MockClock
) -> None:
    """Ctrl-C in a CLI cancels from outside; the goodbye (DIM deregister) must still happen."""
    async with open_simulator(conf, ephemeral=True) as sim:
        with trio.CancelScope() as outer:
            async with DiscoverySession.open(*sim.endpoint(1), host=HOST, options=ONE_SHOT) as s:
                assert HOST.hostnqn in sim.registrations
                outer.cancel()
                started = trio.current_time()
                await trio.sleep(1)
        assert outer.cancelled_caught
        assert trio.current_time() - started < 1  # no wait for the 5 s shutdown budget
        assert s.registered is False
        assert sim.registrations == {}
