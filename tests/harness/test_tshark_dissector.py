"""An independent decoder agrees with us: Wireshark's NVMe/TCP dissector reads a captured
host <-> simulator conversation (digests off, and header + data digests on) field by field
as we meant it, finds nothing malformed, and checks our CRC32C digests itself.

One live capture on lo serves every test: two simulators (DDC, so DIM is used) on their own
ephemeral ports, one persistent session each, run side by side. Each session does the full
round: ICReq/ICResp, Connect, Property Get/Set, Identify, DIM register, Set Features (AEC),
AER, Get Log Page, an AEN after an unlink, another Get Log Page, Keep Alive, then DIM
deregister and the CC.SHN shutdown.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import attrs
import pytest
import trio
from sim_server import Simulator, open_simulator
from tshark_capture import (
    TSHARK,
    CaptureError,
    ExpertInfo,
    capturing,
    decode_fields,
    expert_infos,
)

from stas.constants import WELL_KNOWN_DISC_NQN
from stas.nvme.bitfields import AenInfo
from stas.nvme.logpage import DiscoveryLogPage
from stas.nvme.session import DiscoverySession, SessionOptions
from tests.helpers.entries import HOSTID
from tests.helpers.sim import host_identity, seed_conf

pytestmark = [
    pytest.mark.tshark,
    pytest.mark.skipif(TSHARK is None, reason="tshark not installed (Debian package: tshark)"),
]

CONF = seed_conf()
HOST = host_identity(HOSTID, hostname="tshark-check")
KATO_MS = 20000  # Keep Alive is sent explicitly below; the timer never fires in the test
DISCOVERY_NQN = WELL_KNOWN_DISC_NQN
CASES = {"plain": False, "digests": True}

# Spec values, written out rather than imported so a wrong constant of ours cannot agree
# with itself. NVMe/TCP PDU types (NVMe/TCP transport spec, 3.6.1):
ICREQ, ICRESP, CAPSULE_CMD, CAPSULE_RESP, C2H_DATA = 0, 1, 4, 5, 7
# Admin opcodes (base spec, Figure "Opcodes for Admin Commands"; DIM from TP8010):
GET_LOG_PAGE, IDENTIFY, SET_FEATURES, AER, KEEP_ALIVE, DIM = 0x02, 0x06, 0x09, 0x0C, 0x18, 0x21
# Fabrics command types (NVMe-oF spec, Figure "Fabrics Command Type"):
PROPERTY_SET, CONNECT, PROPERTY_GET = 0x00, 0x01, 0x04
DISCOVERY_LID = 0x70
ASYNC_EVENT_CONFIG_FID = 0x0B

FIELDS = (
    "frame.number",
    "tcp.srcport",
    "tcp.dstport",
    "nvme-tcp.type",
    "nvme-tcp.flags",
    "nvme-tcp.hlen",
    "nvme-tcp.pdo",
    "nvme-tcp.hdgst.status",
    "nvme-tcp.ddgst.status",
    "nvme-tcp.icreq.pfv",
    "nvme-tcp.icreq.digest",
    "nvme-tcp.icresp.digest",
    "nvme.cmd.opc",
    "nvme.fabrics.cmd.fctype",
    "nvme.fabrics.cmd.connect.qid",
    "nvme.fabrics.cmd.connect.kato",
    "nvme.fabrics.cmd.connect.data.hostid",
    "nvme.fabrics.cmd.connect.data.cntrlid",
    "nvme.fabrics.cmd.connect.data.subnqn",
    "nvme.fabrics.cmd.connect.data.hostnqn",
    "nvme.fabrics.cmd.prop_get_set.offset",
    "nvme.cmd.identify.dword10.cns",
    "nvme.cmd.identify.ctrl.cntlid",
    "nvme.cmd.identify.ctrl.subnqn",
    "nvme.cmd.set_features.dword10.fid",
    "nvme.cmd.get_logpage.dword10.id",
    "nvme.cmd.get_logpage.identify.genctr",
    "nvme.cmd.get_logpage.identify.rcrd.subnqn",
    "nvme.cmd.get_logpage.identify.rcrd.traddr",
    "nvme.cmd.get_logpage.identify.rcrd.trsvcid",
    "nvme.cqe.status",
    "nvme.cqe.dword0.aev.aet",
    "nvme.cqe.dword0.aev.aei",
    "nvme.cqe.dword0.aev.lpi",
)


Frames = list[dict[str, list[str]]]  # one dict per captured frame: field -> its values


@attrs.frozen
class HostView:
    """What our own decoder made of one session, to hold Wireshark's reading against."""

    port: int
    pages: tuple[DiscoveryLogPage, DiscoveryLogPage]
    aen: AenInfo
    cntlid: int
    subnqn: str
    was_registered: bool


@attrs.frozen
class Capture:
    pcap: Path
    views: dict[str, HostView]
    canary_port: int

    @property
    def ports(self) -> list[int]:
        """The simulators' ports: the conversations under test."""
        return [view.port for view in self.views.values()]

    @property
    def nvme_ports(self) -> list[int]:
        """Every port to decode as NVMe/TCP, the canary's included."""
        return [*self.ports, self.canary_port]

    def only_ours(self, display_filter: str) -> str:
        ports = " || ".join(f"tcp.port == {port}" for port in self.ports)
        return f"({display_filter}) && ({ports})"


async def _run_session(sim: Simulator, digests: bool) -> HostView:
    """The full persistent-connection round against one simulator."""
    host, port = sim.endpoint(1)
    opts = SessionOptions(persistent=True, hdgst=digests, ddgst=digests, kato_ms=KATO_MS)
    async with DiscoverySession.open(host, port, host=HOST, options=opts) as session:
        aens = session.aens()
        before = await session.get_log_page()
        await sim.unlink(1, "klingons")
        with trio.fail_after(5):
            aen = await aens.__anext__()
        after = await session.get_log_page()
        await session.keep_alive()
        registered = session.registered
        cntlid, subnqn = session.cntlid, session.identify.subnqn
    return HostView(port, (before, after), aen, cntlid, subnqn, registered)


# A CapsuleResponse whose PLEN (8) is shorter than its own header (24): Wireshark 4.0 calls
# it a Malformed Packet. Sent on its own port, it proves the "nothing malformed" checks
# below can fail at all.
BROKEN_PDU = bytes([CAPSULE_RESP, 0, 24, 0]) + (8).to_bytes(4, "little") + bytes(16)


async def _send_canary(listener: trio.SocketListener) -> None:
    """Send BROKEN_PDU and close politely (no RST: the far side reads to EOF first)."""
    port = listener.socket.getsockname()[1]
    async with trio.open_nursery() as nursery:

        async def sink() -> None:
            async with await listener.accept() as server:
                while await server.receive_some(4096):
                    pass

        nursery.start_soon(sink)
        async with await trio.open_tcp_stream("::1", port) as client:
            await client.send_all(BROKEN_PDU)


async def _converse(pcap: Path) -> tuple[dict[str, HostView], int]:
    views: dict[str, HostView] = {}
    canary = (await trio.open_tcp_listeners(0, host="::1"))[0]
    canary_port = canary.socket.getsockname()[1]
    async with (
        canary,
        open_simulator(CONF, ephemeral=True, dctype="ddc") as plain_sim,
        open_simulator(CONF, ephemeral=True, dctype="ddc") as digest_sim,
    ):
        sims = {"plain": plain_sim, "digests": digest_sim}
        ports = [sim.endpoint(1)[1] for sim in sims.values()]

        async def one(name: str) -> None:
            views[name] = await _run_session(sims[name], CASES[name])

        async with capturing(pcap, [*ports, canary_port]), trio.open_nursery() as nursery:
            nursery.start_soon(_send_canary, canary)
            for name in sims:
                nursery.start_soon(one, name)
    return views, canary_port


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Capture:
    pcap = tmp_path_factory.mktemp("tshark") / "conversation.pcapng"
    try:
        views, canary_port = trio.run(_converse, pcap)
    except CaptureError as exc:
        if os.geteuid() != 0:
            pytest.skip(f"cannot capture on lo without root or dumpcap capabilities: {exc}")
        raise
    return Capture(pcap, views, canary_port)


@pytest.fixture(scope="module")
def frames(capture: Capture) -> Frames:
    return decode_fields(capture.pcap, capture.nvme_ports, FIELDS)


def values(frames: Frames, port: int, field: str) -> list[str]:
    """Every value of ``field`` in the frames of the conversation on simulator ``port``."""
    return [
        value
        for frame in frames
        if str(port) in frame["tcp.srcport"] + frame["tcp.dstport"]
        for value in frame[field]
    ]


def ints(frames: Frames, port: int, field: str) -> list[int]:
    return [int(v, 0) for v in values(frames, port, field)]


@pytest.fixture(params=list(CASES))
def case(request: pytest.FixtureRequest, capture: Capture) -> HostView:
    return capture.views[request.param]


# --- the PDU layer ------------------------------------------------------------------------


def test_every_pdu_type_we_exchange_is_decoded(frames: Frames, case: HostView) -> None:
    types = Counter(ints(frames, case.port, "nvme-tcp.type"))
    assert set(types) == {ICREQ, ICRESP, CAPSULE_CMD, CAPSULE_RESP, C2H_DATA}, types
    assert types[ICREQ] == types[ICRESP] == 1
    # Every command is answered except the AER still outstanding when we hung up.
    assert types[CAPSULE_CMD] == types[CAPSULE_RESP] + 1
    # Identify + 2 x 3 log page reads (header, entries, header again), each one C2HData PDU.
    assert types[C2H_DATA] == 7


def test_initialize_connection_negotiates_the_digests_we_asked_for(
    frames: Frames, capture: Capture
) -> None:
    for name, digests in CASES.items():
        port = capture.views[name].port
        wanted = 0b11 if digests else 0
        assert ints(frames, port, "nvme-tcp.icreq.pfv") == [0]
        assert ints(frames, port, "nvme-tcp.icreq.digest") == [wanted]
        assert ints(frames, port, "nvme-tcp.icresp.digest") == [wanted]


def test_header_lengths_and_data_offsets_follow_the_digest_setting(
    frames: Frames, capture: Capture
) -> None:
    """With HDGST on, PDO moves past the 4 digest bytes (CPDA 0); without, PDO == HLEN."""
    for name, digests in CASES.items():
        port = capture.views[name].port
        pdus = [
            (t, hlen, pdo)
            for frame in frames
            if str(port) in frame["tcp.srcport"] + frame["tcp.dstport"]
            for t, hlen, pdo in zip(
                frame["nvme-tcp.type"], frame["nvme-tcp.hlen"], frame["nvme-tcp.pdo"], strict=True
            )
        ]
        expected_hlen = {ICREQ: 128, ICRESP: 128, CAPSULE_CMD: 72, CAPSULE_RESP: 24, C2H_DATA: 24}
        for kind, hlen, pdo in pdus:
            assert int(hlen) == expected_hlen[int(kind)]
            if int(kind) == C2H_DATA:
                assert int(pdo) == int(hlen) + (4 if digests else 0)
            elif int(pdo):  # capsules carrying data (Connect, DIM)
                assert int(kind) == CAPSULE_CMD
                assert int(pdo) == int(hlen) + (4 if digests else 0)


def test_wireshark_verifies_every_digest_as_good(frames: Frames, capture: Capture) -> None:
    digests = capture.views["digests"]
    types = Counter(ints(frames, digests.port, "nvme-tcp.type"))
    hdgst = values(frames, digests.port, "nvme-tcp.hdgst.status")
    ddgst = values(frames, digests.port, "nvme-tcp.ddgst.status")
    # 1 is "Good" in Wireshark's digest status (0 Bad, 2 Unverified, 3 Not present, 4 Illegal).
    assert set(hdgst) == {"1"} and set(ddgst) == {"1"}
    # ICReq/ICResp never carry digests; every later PDU has a header digest.
    assert len(hdgst) == types[CAPSULE_CMD] + types[CAPSULE_RESP] + types[C2H_DATA]
    # Data digests: every C2HData, Connect's data and the two DIM payloads (in-capsule).
    assert len(ddgst) == types[C2H_DATA] + 1 + 2
    flags = ints(frames, digests.port, "nvme-tcp.flags")
    assert all(f & 0b01 for f in flags[2:]), "HDGSTF missing after the IC exchange"

    plain = capture.views["plain"]
    assert values(frames, plain.port, "nvme-tcp.hdgst.status") == []
    assert values(frames, plain.port, "nvme-tcp.ddgst.status") == []
    assert not any(f & 0b11 for f in ints(frames, plain.port, "nvme-tcp.flags"))


# --- the commands -------------------------------------------------------------------------


def test_every_command_we_send_is_recognised(frames: Frames, case: HostView) -> None:
    fabrics = Counter(ints(frames, case.port, "nvme.fabrics.cmd.fctype"))
    # Connect; Property Get CAP, VS, CSTS (enable), CSTS (shutdown); Property Set CC twice.
    assert fabrics == {CONNECT: 1, PROPERTY_GET: 4, PROPERTY_SET: 2}
    admin = Counter(ints(frames, case.port, "nvme.cmd.opc"))
    # Wireshark 4.0 predates TP8010, so DIM shows as opcode 0x21 "Unknown": still decoded as
    # a well-formed command with its in-capsule data, which is what matters here.
    assert admin == {
        IDENTIFY: 1,
        DIM: 2,  # register at bring-up, deregister before shutdown
        SET_FEATURES: 1,
        AER: 2,  # the first one completes with the AEN, then it is re-armed
        GET_LOG_PAGE: 6,
        KEEP_ALIVE: 1,
    }
    assert case.was_registered


def test_connect_carries_our_identity(frames: Frames, case: HostView) -> None:
    assert values(frames, case.port, "nvme.fabrics.cmd.connect.data.hostnqn") == [HOST.hostnqn]
    assert values(frames, case.port, "nvme.fabrics.cmd.connect.data.subnqn") == [DISCOVERY_NQN]
    assert values(frames, case.port, "nvme.fabrics.cmd.connect.data.hostid") == [HOST.hostid.hex()]
    assert ints(frames, case.port, "nvme.fabrics.cmd.connect.data.cntrlid") == [0xFFFF]
    assert ints(frames, case.port, "nvme.fabrics.cmd.connect.qid") == [0]
    assert ints(frames, case.port, "nvme.fabrics.cmd.connect.kato") == [KATO_MS]


def test_identify_reads_the_same(frames: Frames, case: HostView) -> None:
    assert ints(frames, case.port, "nvme.cmd.identify.ctrl.cntlid") == [case.cntlid]
    assert values(frames, case.port, "nvme.cmd.identify.ctrl.subnqn") == [case.subnqn]


def test_property_offsets_and_command_arguments(frames: Frames, case: HostView) -> None:
    offsets = ints(frames, case.port, "nvme.fabrics.cmd.prop_get_set.offset")
    # CAP 00h, VS 08h, CC 14h, CSTS 1Ch: bring-up then shutdown.
    assert offsets == [0x00, 0x08, 0x14, 0x1C, 0x14, 0x1C]
    assert ints(frames, case.port, "nvme.cmd.identify.dword10.cns") == [1]
    assert ints(frames, case.port, "nvme.cmd.set_features.dword10.fid") == [ASYNC_EVENT_CONFIG_FID]
    assert set(ints(frames, case.port, "nvme.cmd.get_logpage.dword10.id")) == {DISCOVERY_LID}


def test_every_completion_is_successful(frames: Frames, case: HostView) -> None:
    statuses = ints(frames, case.port, "nvme.cqe.status")
    assert statuses and set(statuses) == {0}


def test_the_aen_reads_the_same(frames: Frames, case: HostView) -> None:
    assert ints(frames, case.port, "nvme.cqe.dword0.aev.aet") == [case.aen.event_type]
    assert ints(frames, case.port, "nvme.cqe.dword0.aev.aei") == [case.aen.event_info]
    assert ints(frames, case.port, "nvme.cqe.dword0.aev.lpi") == [case.aen.log_page]
    assert case.aen.log_page == DISCOVERY_LID


def test_the_discovery_log_pages_read_the_same(frames: Frames, case: HostView) -> None:
    """Wireshark renders the entries of each read in order, as we decoded them.

    Wireshark 4.0 drops the last entry of a read that starts past the header (LPO 1024, as
    libnvme and we do it): it sizes the record loop from the bytes left *after* the first
    record (packet-nvme.c, dissect_nvme_get_logpage_ify_resp). So each rendered list must be
    a prefix of one of our pages missing at most that one entry.
    """
    ours = [[entry.subnqn for entry in page.entries] for page in case.pages]
    assert "klingons" in ours[0] and "klingons" not in ours[1]
    rendered = [
        frame["nvme.cmd.get_logpage.identify.rcrd.subnqn"]
        for frame in frames
        if str(case.port) in frame["tcp.srcport"] + frame["tcp.dstport"]
        and frame["nvme.cmd.get_logpage.identify.rcrd.subnqn"]
    ]
    assert len(rendered) == 2, rendered  # one entries read per page
    for theirs, page in zip(rendered, ours, strict=True):
        assert theirs == page[: len(theirs)] and len(theirs) >= len(page) - 1, (theirs, page)
    genctrs = set(ints(frames, case.port, "nvme.cmd.get_logpage.identify.genctr"))
    assert genctrs == {page.genctr for page in case.pages}
    assert set(values(frames, case.port, "nvme.cmd.get_logpage.identify.rcrd.trsvcid")) == {
        str(case.port)
    }
    assert set(values(frames, case.port, "nvme.cmd.get_logpage.identify.rcrd.traddr")) == {"::1"}


# --- nothing to complain about ------------------------------------------------------------


# Ethernet/IP/TCP expert items on loopback say something about the kernel's TCP or the
# capture (D-SACK, window updates, duplicate ACKs, a segment seen before its SYN), not
# about our bytes; only the layers above TCP and _ws.malformed are ours to answer for.
TRANSPORT_LAYERS = {"frame", "eth", "ip", "ipv6", "tcp"}
COMPLAINTS = "_ws.expert.severity >= warning || _ws.malformed"


def nvme_complaints(capture: Capture, display_filter: str) -> list[ExpertInfo]:
    found = expert_infos(capture.pcap, capture.nvme_ports, display_filter)
    return [
        info
        for info in found
        if info.severity in {"warning", "error"} and info.layer not in TRANSPORT_LAYERS
    ]


def test_the_checks_below_can_fail(capture: Capture) -> None:
    canary = f"({COMPLAINTS}) && tcp.port == {capture.canary_port}"
    complaints = nvme_complaints(capture, canary)
    assert [(info.layer, info.severity) for info in complaints] == [("_ws.malformed", "error")]


def test_no_packet_is_malformed(capture: Capture) -> None:
    malformed = capture.only_ours("_ws.malformed")
    assert decode_fields(capture.pcap, capture.nvme_ports, ["frame.number"], malformed) == []


def test_no_nvme_warning_or_error(capture: Capture) -> None:
    assert nvme_complaints(capture, capture.only_ours(COMPLAINTS)) == []
