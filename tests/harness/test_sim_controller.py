"""The sans-IO simulated discovery controller, driven fully in memory by a HostConnection."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nvmet_config import parse_nvmet_conf
from sim_controller import AERL, MDTS, DiscoveryControllerSession, Output
from sim_faults import FaultBudget, Faults
from sim_model import WELL_KNOWN_DISCOVERY_NQN, SimModel

from stas.nvme import commands as cmd
from stas.nvme.commands import (
    AEC_DISCOVERY_LOG_CHANGE,
    AEN_DISCOVERY_LOG_CHANGED,
    CC_ENABLE,
    CC_SHUTDOWN_NORMAL,
    LSP_PLEO,
    REG_CAP,
    REG_CSTS,
    REG_VS,
    AdminOpcode,
    Cap,
    ConnectData,
    Cqe,
    Csts,
    DimTas,
    FeatureId,
    LogPageId,
    Sqe,
)
from stas.nvme.connection import Completion, Established, HostConnection
from stas.nvme.dim import host_registration
from stas.nvme.errors import ProtocolError
from stas.nvme.identify import (
    CntrlType,
    DcType,
    DiscoveryLogSupport,
    IdentifyController,
    decode_supported_log_pages,
)
from stas.nvme.logpage import AdrFam, DiscoveryLogPage
from stas.nvme.pdu import CapsuleCmd, encode_pdu
from tests.helpers import entries
from tests.helpers.sim import host_identity

HOST = host_identity(entries.HOSTID)
HOSTNQN, HOSTID = HOST.hostnqn, HOST.hostid
CONF = """{
    'ports': [
        {'id': 1, 'traddr': '::1', 'trsvcid': 8009, 'trtype': 'tcp'},
        {'id': 2, 'traddr': '127.0.0.1', 'trsvcid': 8010, 'trtype': 'tcp'},
    ],
    'subsystems': [
        {'subsysnqn': 'klingons', 'port': 1, 'namespaces': [1]},
        {'subsysnqn': 'starfleet', 'port': 1, 'namespaces': [1]},
        {'subsysnqn': 'romulans', 'port': 2, 'namespaces': [1]},
    ],
}"""


def make_model() -> SimModel:
    return SimModel(parse_nvmet_conf(CONF))


class Host:
    """A host that talks to a session through bytes only, in memory."""

    def __init__(self, session: DiscoveryControllerSession) -> None:
        self.session = session
        self.conn = HostConnection()
        self.completions: list[Completion] = []
        self.outputs: list[Output] = []

    def feed(self, wire: bytes) -> list[object]:
        events = self.conn.receive(wire) if wire else []
        self.completions += [e for e in events if isinstance(e, Completion)]
        return events

    def start(self) -> None:
        outs = self.session.receive(self.conn.start())
        events = self.feed(b"".join(o.data for o in outs))
        assert isinstance(events[0], Established)

    def submit(self, sqe: Sqe, *, data: bytes = b"", read_len: int = 0) -> int:
        cid, wire = self.conn.send_command(sqe.encode(), data=data, read_len=read_len)
        outs = self.session.receive(wire)
        self.outputs += outs
        self.feed(b"".join(o.data for o in outs))
        return cid

    def run(self, sqe: Sqe, *, data: bytes = b"", read_len: int = 0) -> tuple[Cqe, bytes]:
        cid = self.submit(sqe, data=data, read_len=read_len)
        (done,) = [c for c in self.completions if c.cid == cid]
        self.completions.remove(done)
        return Cqe.decode(done.cqe), done.data

    def connect(self, subnqn: str = WELL_KNOWN_DISCOVERY_NQN, kato_ms: int = 30000) -> Cqe:
        data = ConnectData(HOSTID, 0xFFFF, subnqn, HOSTNQN).encode()
        return self.run(cmd.connect(kato_ms=kato_ms), data=data)[0]

    def enable(self) -> None:
        assert self.run(cmd.property_set(0x14, CC_ENABLE))[0].ok

    def log(self, *, offset: int, length: int, lsp: int = 0, rae: bool = False) -> bytes:
        cqe, data = self.run(
            cmd.get_log_page(LogPageId.DISCOVERY, offset=offset, length=length, lsp=lsp, rae=rae),
            read_len=length,
        )
        assert cqe.ok, cqe.status_name
        return data


def ready_host(model: SimModel | None = None, **kwargs: object) -> Host:
    host = Host(DiscoveryControllerSession(model or make_model(), 1, **kwargs))  # type: ignore[arg-type]
    host.start()
    assert host.connect().ok
    host.enable()
    return host


def test_connect_sequence_and_properties() -> None:
    host = Host(DiscoveryControllerSession(make_model(), 1, cntlid=7))
    host.start()
    cqe = host.connect(kato_ms=12000)
    assert cqe.ok and cmd.connect_result(cqe.dw0).cntlid == 7
    assert host.session.hostnqn == HOSTNQN
    assert host.session.hostid == HOSTID
    assert host.session.kato_ms == 12000
    cap_cqe, _ = host.run(cmd.property_get(REG_CAP, eight_bytes=True))
    assert Cap.decode(cap_cqe.dw0 | (cap_cqe.dw1 << 32)).mqes == 31
    assert host.run(cmd.property_get(REG_VS, eight_bytes=False))[0].dw0 == 0x00020000
    assert not host.session.enabled
    host.enable()
    assert host.session.enabled
    assert Csts.decode(host.run(cmd.property_get(REG_CSTS, eight_bytes=False))[0].dw0).rdy
    host.run(cmd.property_set(0x14, CC_SHUTDOWN_NORMAL))
    csts = Csts.decode(host.run(cmd.property_get(REG_CSTS, eight_bytes=False))[0].dw0)
    assert csts.shst == cmd.CSTS_SHST_COMPLETE


def test_connect_with_unique_dc_nqn_and_bad_nqn() -> None:
    model = make_model()
    good = Host(DiscoveryControllerSession(model, 1))
    good.start()
    assert good.connect(subnqn=model.dc_nqn).ok
    bad = Host(DiscoveryControllerSession(model, 1))
    bad.start()
    cqe = bad.connect(subnqn="klingons")
    assert cqe.status_name == "Connect Invalid Parameters"
    assert cqe.dw0 >> 16 == 256  # IPO points at SUBNQN in the Connect data
    assert bad.session.hostnqn is None


def test_sequence_errors_before_connect_and_enable() -> None:
    host = Host(DiscoveryControllerSession(make_model(), 1))
    host.start()
    before = host.run(cmd.property_get(REG_CAP, eight_bytes=True))[0]
    assert before.status_name == "Command Sequence Error"
    assert host.connect().ok
    assert host.connect().status_name == "Command Sequence Error"  # one Connect per queue
    cqe, _ = host.run(cmd.identify_controller(), read_len=4096)
    assert cqe.status_name == "Command Sequence Error"
    host.enable()
    assert host.run(cmd.identify_controller(), read_len=4096)[0].ok


@pytest.mark.parametrize(
    ("dctype", "expected"),
    [("ddc", DcType.DDC), ("cdc", DcType.CDC), ("none", DcType.NOT_REPORTED)],
)
def test_identify_fields(dctype: str, expected: DcType) -> None:
    model = make_model()
    host = ready_host(model, dctype=dctype, cntlid=3)
    cqe, data = host.run(cmd.identify_controller(), read_len=4096)
    assert cqe.ok
    ident = IdentifyController.decode(data)
    assert ident.cntrltype == CntrlType.DISCOVERY
    assert ident.dctype == expected
    assert ident.oaes & (1 << 31)
    assert ident.supports_discovery_log_change_notices
    assert ident.aerl == AERL == 3
    assert ident.lpa & 0x4
    assert ident.kas == 1
    assert ident.mdts == MDTS
    assert ident.cntlid == 3
    assert ident.subnqn == model.dc_nqn
    assert ident.is_registration_supported == (dctype != "none")


def test_supported_log_pages_advertise_lsp_bits() -> None:
    host = ready_host()
    cqe, data = host.run(
        cmd.get_log_page(LogPageId.SUPPORTED_LOG_PAGES, offset=0, length=1024), read_len=1024
    )
    assert cqe.ok
    support = DiscoveryLogSupport.from_dword(decode_supported_log_pages(data)[0x70])
    assert support == DiscoveryLogSupport(extdlpes=True, pleos=True, allsubes=True)


def test_log_page_read_in_chunks_with_offsets() -> None:
    model = make_model()
    host = ready_host(model)
    header = host.log(offset=0, length=1024, rae=True)
    numrec = int.from_bytes(header[8:16], "little")
    assert numrec == 3  # all ports without PLEO
    body = b"".join(host.log(offset=1024 * (i + 1), length=1024) for i in range(numrec))
    page = DiscoveryLogPage.decode(header + body)
    assert page.genctr == model.genctr
    assert [e.subnqn for e in page.entries] == ["klingons", "starfleet", "romulans"]
    first = page.entries[0]
    assert (first.traddr, first.trsvcid, first.portid, first.adrfam) == (
        "::1",
        "8009",
        1,
        AdrFam.IPV6,
    )
    assert (first.cntlid, first.asqsz, first.eflags, first.treq) == (0xFFFF, 32, 0, 0)
    # a read past the end is zero-filled, not an error
    assert host.log(offset=1024 * 10, length=64) == bytes(64)


def test_pleo_limits_to_receiving_port() -> None:
    host = ready_host()
    data = host.log(offset=0, length=4096, lsp=LSP_PLEO)
    page = DiscoveryLogPage.decode(data)
    assert [e.subnqn for e in page.entries] == ["klingons", "starfleet"]
    assert page.dlpf & 0x2


def test_log_page_errors() -> None:
    host = ready_host()
    bad_lid = host.run(cmd.get_log_page(0x05, offset=0, length=512), read_len=512)[0]
    assert bad_lid.status_name == "Invalid Log Page"
    sqe = cmd.get_log_page(LogPageId.DISCOVERY, offset=0, length=64)
    misaligned = Sqe.decode(sqe.encode()[:48] + (2).to_bytes(4, "little") + sqe.encode()[52:])
    assert host.run(misaligned, read_len=64)[0].status_name == "Invalid Field in Command"
    too_big = cmd.get_log_page(LogPageId.DISCOVERY, offset=0, length=(1 << 20))
    assert host.run(too_big, read_len=1 << 20)[0].status_name == "Invalid Field in Command"


def test_features_and_unknown_opcode() -> None:
    host = ready_host()
    assert host.run(cmd.set_features(FeatureId.KEEP_ALIVE_TIMER, 5000))[0].ok
    assert host.run(cmd.get_features(FeatureId.KEEP_ALIVE_TIMER))[0].dw0 == 5000
    assert host.session.kato_ms == 5000
    assert host.run(cmd.get_features(FeatureId.ASYNC_EVENT_CONFIG))[0].dw0 == 0
    assert host.run(cmd.set_features(0x07, 1))[0].status_name == "Invalid Field in Command"
    assert host.run(cmd.keep_alive())[0].ok
    unknown = host.run(Sqe(opcode=0x80, flags=0x40))[0]
    assert unknown.status_name == "Invalid Command Opcode" and unknown.dnr


def test_aer_completes_after_unlink_only_when_enabled() -> None:
    model = make_model()
    host = ready_host(model)
    cid = host.submit(cmd.async_event_request())
    assert host.completions == []  # stays outstanding
    model.unlink(1, "klingons")
    assert host.session.notify_log_change() == b""  # notices not enabled yet
    assert host.run(cmd.set_features(FeatureId.ASYNC_EVENT_CONFIG, AEC_DISCOVERY_LOG_CHANGE))[0].ok
    assert host.session.notices_enabled
    model.link(1, "klingons")
    host.feed(host.session.notify_log_change())
    (aen,) = host.completions
    assert aen.cid == cid and Cqe.decode(aen.cqe).dw0 == AEN_DISCOVERY_LOG_CHANGED
    host.completions.clear()
    host.submit(cmd.async_event_request())
    model.unlink(1, "klingons")
    assert host.session.notify_log_change() == b""  # previous AEN not cleared yet
    host.log(offset=0, length=1024, rae=True)
    assert host.session.notify_log_change() == b""  # RAE=1 keeps it pending
    host.log(offset=0, length=1024, rae=False)
    host.feed(host.session.notify_log_change())
    assert [Cqe.decode(c.cqe).dw0 for c in host.completions] == [AEN_DISCOVERY_LOG_CHANGED]


def test_event_without_aer_is_reported_on_next_aer() -> None:
    model = make_model()
    host = ready_host(model)
    host.run(cmd.set_features(FeatureId.ASYNC_EVENT_CONFIG, AEC_DISCOVERY_LOG_CHANGE))
    model.unlink(1, "klingons")
    assert host.session.notify_log_change() == b""  # no AER yet: retained
    cid = host.submit(cmd.async_event_request())
    (aen,) = host.completions
    assert aen.cid == cid and Cqe.decode(aen.cqe).dw0 == AEN_DISCOVERY_LOG_CHANGED
    host.completions.clear()
    host.submit(cmd.async_event_request())
    assert host.completions == []  # reported once only


def test_aer_limit_exceeded() -> None:
    host = ready_host()
    for _ in range(AERL + 1):
        host.submit(cmd.async_event_request())
    assert host.completions == []
    assert host.session.outstanding_aers == AERL + 1
    cqe, _ = host.run(cmd.async_event_request())
    assert cqe.status_name == "Asynchronous Event Request Limit Exceeded"


def test_aen_storm_uses_whole_aer_budget() -> None:
    host = ready_host()
    host.run(cmd.set_features(FeatureId.ASYNC_EVENT_CONFIG, AEC_DISCOVERY_LOG_CHANGE))
    for _ in range(2):
        host.submit(cmd.async_event_request())
    host.feed(host.session.start_storm(3))
    assert len(host.completions) == 2
    host.submit(cmd.async_event_request())  # re-armed: the storm continues at once
    assert len(host.completions) == 3
    assert host.session.storm_remaining == 0


def _registration(hostnqn: str = HOSTNQN) -> bytes:
    return host_registration(
        hostnqn=hostnqn,
        hostid=HOSTID,
        hostname="host1",
        os_version="Debian 12",
        symname=None,
        adrfam=AdrFam.IPV6,
    ).encode()


def test_dim_register_and_deregister() -> None:
    model = make_model()
    host = ready_host(model)
    data = _registration()
    cqe, _ = host.run(cmd.dim(DimTas.REGISTER, data_length=len(data)), data=data)
    assert cqe.ok
    reg = model.registrations[HOSTNQN]
    assert reg.data.ename == "host1"
    assert reg.data.entries[0].hostnqn == HOSTNQN
    cqe, _ = host.run(cmd.dim(DimTas.DEREGISTER, data_length=len(data)), data=data)
    assert cqe.ok and HOSTNQN not in model.registrations


def test_dim_rejected_when_dctype_none_or_garbage() -> None:
    host = ready_host(dctype="none")
    data = _registration()
    cqe, _ = host.run(cmd.dim(DimTas.REGISTER, data_length=len(data)), data=data)
    assert cqe.status_name == "Invalid Command Opcode"
    host = ready_host()
    cqe, _ = host.run(cmd.dim(DimTas.REGISTER, data_length=64), data=bytes(64))
    assert cqe.status_name == "Invalid Field in Command"
    assert host.session.model.registrations == {}


def test_genctr_bump_fault_on_offset_read() -> None:
    model = make_model()
    budget = FaultBudget(Faults(genctr_bump_on_read=1))
    host = ready_host(model, budget=budget)
    first = int.from_bytes(host.log(offset=0, length=1024)[:8], "little")
    host.log(offset=1024, length=1024)
    second = int.from_bytes(host.log(offset=0, length=1024)[:8], "little")
    host.log(offset=1024, length=1024)  # budget used up: no more bumps
    third = int.from_bytes(host.log(offset=0, length=1024)[:8], "little")
    assert (first, second, third) == (1, 2, 2)


def test_corrupt_log_page_fault() -> None:
    host = ready_host(budget=FaultBudget(Faults(corrupt_log_page=True)))
    data = host.log(offset=0, length=4096)
    with pytest.raises(ProtocolError):
        DiscoveryLogPage.decode(data)


def test_garbage_bytes_terminate_the_connection() -> None:
    session = DiscoveryControllerSession(make_model(), 1)
    (out,) = session.receive(b"\x99" * 128)
    assert out.close and out.data[0] == 0x03  # C2HTermReq
    assert session.closed


def test_admin_opcodes_are_named_in_summaries() -> None:
    host = ready_host()
    host.run(cmd.keep_alive())
    assert host.outputs[-1].summary() == "Keep Alive: Success"
    assert AdminOpcode.KEEP_ALIVE == 0x18


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash_the_session(data: bytes) -> None:
    session = DiscoveryControllerSession(make_model(), 1)
    outs = session.receive(data)
    assert all(isinstance(o, Output) for o in outs)
    if any(o.close for o in outs):
        assert session.closed


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=64, max_size=64), min_size=1, max_size=6))
def test_arbitrary_commands_get_a_status_or_close(sqes: list[bytes]) -> None:
    host = ready_host(dctype="cdc")
    for cid, raw in enumerate(sqes, start=100):
        sqe = raw[:2] + cid.to_bytes(2, "little") + raw[4:]
        outs = host.session.receive(encode_pdu(CapsuleCmd(sqe)))
        assert len(outs) == 1
        if outs[0].close:
            assert host.session.closed
            return
        if outs[0].data:  # a completion: parse it back
            assert outs[0].command is not None
