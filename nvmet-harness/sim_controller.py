"""One simulated discovery controller association (admin queue), sans-IO.

``DiscoveryControllerSession`` turns host bytes into reply bytes the way a Linux nvmet
discovery controller would (plus the TP8010 parts nvmet lacks: DCTYPE and DIM). It owns
no socket and no clock; the Trio server feeds it and applies timing (KATO, delays).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import attrs
from sim_faults import FaultBudget
from sim_model import SimModel

from stas.nvme import commands as cmd
from stas.nvme.commands import AdminOpcode, Cqe, FabricsType, FeatureId, LogPageId, Sqe
from stas.nvme.connection import (
    CommandReceived,
    ConnectionStateError,
    ControllerConnection,
    Established,
    Terminated,
)
from stas.nvme.dim import DimData
from stas.nvme.errors import ProtocolError
from stas.nvme.identify import CntrlType, DcType, DiscoveryLogSupport, IdentifyController
from stas.nvme.identify import encode_supported_log_pages as encode_log_support
from stas.nvme.pdu import TermReqFes
from stas.nvme.status import SCT_COMMAND_SPECIFIC, SCT_GENERIC, status_name

MDTS = 5  # 2**5 minimum pages of 4 KiB = 128 KiB per command
MAX_TRANSFER = (1 << MDTS) * 4096
AERL = 3  # 0's based: four AERs may be outstanding
KAS = 1  # keep-alive granularity, 100 ms units
VERSION = 0x00020000  # NVMe 2.0 (TP8010 lives there)
CSTS_RDY = 0x1
CSTS_SHST_COMPLETE = 0x2 << 2
CC_EN = 0x1
CC_SHN_SHIFT = 14
CNS_CONTROLLER = 0x01
LID70_SUPPORT = DiscoveryLogSupport(extdlpes=True, pleos=True, allsubes=True).to_dword()
CORRUPT_RECFMT = 7
CORRUPT_NUMREC = 1 << 40
CORRUPT_END = 18  # NUMREC (bytes 8..15) and RECFMT (16..17)

SC_INVALID_OPCODE = cmd.make_status(SCT_GENERIC, 0x01, dnr=True)
SC_INVALID_FIELD = cmd.make_status(SCT_GENERIC, 0x02, dnr=True)
SC_SEQUENCE_ERROR = cmd.make_status(SCT_GENERIC, 0x0C, dnr=True)
SC_AER_LIMIT = cmd.make_status(SCT_COMMAND_SPECIFIC, 0x05, dnr=True)
SC_INVALID_LOG_PAGE = cmd.make_status(SCT_COMMAND_SPECIFIC, 0x09, dnr=True)
SC_CONNECT_INVALID_PARAMS = cmd.make_status(SCT_COMMAND_SPECIFIC, 0x82, dnr=True)
SC_CONNECT_INVALID_HOST = cmd.make_status(SCT_COMMAND_SPECIFIC, 0x84, dnr=True)

_Handler = Callable[[Sqe, bytes], "_Reply"]
_DCTYPES = {"none": DcType.NOT_REPORTED, "ddc": DcType.DDC, "cdc": DcType.CDC}


@attrs.frozen
class Output:
    """Bytes to send, plus what the server needs to know about them.

    ``command`` names the command that was answered or queued (None for pure transport
    output); ``close`` asks the server to close the connection after sending.
    """

    data: bytes
    command: str | None = None
    status: int = 0
    close: bool = False

    def summary(self) -> str:
        if self.close:
            return str(self.command)
        return f"{self.command}: {status_name(self.status)}"


@attrs.frozen
class _Reply:
    status: int = 0
    dw0: int = 0
    dw1: int = 0
    data: bytes = b""
    deferred: bool = False  # AER: no completion now


def dctype_from_label(label: str) -> DcType:
    try:
        return _DCTYPES[label]
    except KeyError:
        raise ValueError(f"dctype must be one of ddc, cdc, none, not {label!r}") from None


class DiscoveryControllerSession:
    """The controller side of one host connection (admin queue only)."""

    def __init__(
        self,
        model: SimModel,
        port_id: int,
        *,
        cntlid: int = 1,
        dctype: str = "ddc",
        budget: FaultBudget | None = None,
        clock: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.model = model
        self.port_id = port_id
        self.cntlid = cntlid
        self._page_cache: tuple[tuple[int, int, str | None], bytes] | None = None
        self.dctype = dctype_from_label(dctype)
        self.budget = budget if budget is not None else FaultBudget()
        self._clock = clock
        self._conn = ControllerConnection()
        self.hostnqn: str | None = None
        self.hostid: bytes | None = None
        self.kato_ms = 0
        # what the host asked for, as seen on the wire (tests read these)
        self.connect_kato_ms: int | None = None
        self.connect_cattr: int | None = None
        self.digests: tuple[bool, bool] | None = None  # ICReq DGST (header, data)
        self.log_page_lsps: list[int] = []  # LSP of every LID 70h read
        self.connected = False
        self.cc = 0
        self.csts = 0
        self.aec = 0
        self.aen_pending = False
        self.storm_remaining = 0
        self._event_queued = False
        self._aers: list[int] = []

    # -- state visible to the server/tests ---------------------------------------------
    @property
    def enabled(self) -> bool:
        return bool(self.cc & CC_EN) and bool(self.csts & CSTS_RDY)

    @property
    def notices_enabled(self) -> bool:
        return bool(self.aec & cmd.AEC_DISCOVERY_LOG_CHANGE)

    @property
    def outstanding_aers(self) -> int:
        return len(self._aers)

    @property
    def closed(self) -> bool:
        return self._conn.closed

    # -- input ---------------------------------------------------------------------------
    def receive(self, data: bytes) -> list[Output]:
        """Feed host bytes; return what to send (in order)."""
        out: list[Output] = []
        try:
            events = self._conn.receive(data)
            while events:
                again = False
                for event in events:
                    if isinstance(event, Established):
                        params = event.params
                        self.digests = (params.hdgst, params.ddgst)
                        wire = self._conn.accept(hdgst=params.hdgst, ddgst=params.ddgst)
                        out.append(Output(wire))
                        again = True
                    elif isinstance(event, CommandReceived):
                        out.append(self._command(event))
                    elif isinstance(event, Terminated):
                        out.append(Output(b"", close=True))
                        return out
                # PDUs after the ICReq stay buffered until accept(); pick them up now.
                events = self._conn.receive(b"") if again else []
        except ProtocolError as exc:
            try:
                wire = self._conn.terminate(int(TermReqFes.INVALID_HEADER_FIELD))
            except ConnectionStateError:  # already closed: nothing more to send
                wire = b""
            out.append(Output(wire, command=f"protocol error: {exc}", close=True))
        return out

    def notify_log_change(self, *, force: bool = False) -> bytes:
        """Complete one outstanding AER with 0x0070F002 if the host may get one now.

        Without ``force`` the usual rules apply: notices enabled and no AEN still pending
        (the host clears it by reading LID 70h with RAE=0). With no AER outstanding the
        event is retained and reported on the host's next AER, as nvmet does.
        """
        if not self.notices_enabled or self._conn.closed:
            return b""
        if self.aen_pending and not force:
            return b""
        if not self._aers:
            self._event_queued = True
            return b""
        cid = self._aers.pop(0)
        self.aen_pending = True
        self._event_queued = False
        return self._complete(cid, _Reply(dw0=cmd.AEN_DISCOVERY_LOG_CHANGED))

    def start_storm(self, count: int) -> bytes:
        """Send ``count`` AENs, now and as soon as the host re-arms AERs (fault injection)."""
        self.storm_remaining = count
        return self._flush_events()

    def _flush_events(self) -> bytes:
        """Report a retained event, then continue a storm, as far as the AERs allow."""
        parts = []
        if self._event_queued and self._aers and not self.aen_pending:
            parts.append(self.notify_log_change())
        while self.storm_remaining > 0 and self._aers:
            wire = self.notify_log_change(force=True)
            if not wire:
                break
            self.storm_remaining -= 1
            parts.append(wire)
        return b"".join(parts)

    # -- commands ------------------------------------------------------------------------
    def _command(self, event: CommandReceived) -> Output:
        try:
            sqe = Sqe.decode(event.sqe)
        except ProtocolError:
            return Output(self._complete(event.cid, _Reply(SC_INVALID_FIELD)), "bad SQE")
        name, handler = self._dispatch(sqe)
        reply = handler(sqe, event.data)
        if reply.deferred:
            extra = self._flush_events()
            return Output(extra, command=name)
        return Output(self._complete(event.cid, reply), command=name, status=reply.status)

    def _dispatch(self, sqe: Sqe) -> tuple[str, _Handler]:
        opcode = sqe.opcode
        if opcode == AdminOpcode.FABRICS:
            fctype = sqe.fctype
            fabrics = {
                FabricsType.CONNECT: ("Connect", self._connect),
                FabricsType.PROPERTY_GET: ("Property Get", self._property_get),
                FabricsType.PROPERTY_SET: ("Property Set", self._property_set),
            }
            if fctype in fabrics:
                return fabrics[fctype]
            return f"Fabrics 0x{fctype:02x}", self._needs_enabled(self._invalid_opcode)
        admin = {
            AdminOpcode.IDENTIFY: ("Identify", self._identify),
            AdminOpcode.GET_LOG_PAGE: ("Get Log Page", self._get_log_page),
            AdminOpcode.SET_FEATURES: ("Set Features", self._set_features),
            AdminOpcode.GET_FEATURES: ("Get Features", self._get_features),
            AdminOpcode.KEEP_ALIVE: ("Keep Alive", lambda _s, _d: _Reply()),
            AdminOpcode.ASYNC_EVENT_REQUEST: ("Asynchronous Event Request", self._aer),
            AdminOpcode.DIM: ("Discovery Information Management", self._dim),
        }
        name, handler = admin.get(opcode, (f"opcode 0x{opcode:02x}", self._invalid_opcode))
        return name, self._needs_enabled(handler)

    def _needs_enabled(self, handler: _Handler) -> _Handler:
        def guarded(sqe: Sqe, data: bytes) -> _Reply:
            if not self.connected or not self.enabled:
                return _Reply(SC_SEQUENCE_ERROR)
            return handler(sqe, data)

        return guarded

    def _complete(self, cid: int, reply: _Reply) -> bytes:
        cqe = Cqe(dw0=reply.dw0, dw1=reply.dw1, cid=cid, status=reply.status).encode()
        return self._conn.complete(cid, cqe, reply.data)

    @staticmethod
    def _invalid_opcode(_sqe: Sqe, _data: bytes) -> _Reply:
        return _Reply(SC_INVALID_OPCODE)

    def _connect(self, sqe: Sqe, data: bytes) -> _Reply:
        if self.connected:
            return _Reply(SC_SEQUENCE_ERROR)
        args = cmd.decode_connect(sqe)
        # IATTR=1 (data), IPO = offset of the offending field in the Connect data.
        if args.qid != 0 or args.recfmt != 0:
            return _Reply(SC_CONNECT_INVALID_PARAMS, dw0=(42 << 16) if args.qid else 0)
        try:
            conn = cmd.ConnectData.decode(data)
        except ProtocolError:
            return _Reply(SC_CONNECT_INVALID_PARAMS, dw0=1)
        if not self.model.is_discovery_nqn(conn.subnqn):
            return _Reply(SC_CONNECT_INVALID_PARAMS, dw0=(256 << 16) | 1)
        if not conn.hostnqn:
            return _Reply(SC_CONNECT_INVALID_HOST, dw0=(512 << 16) | 1)
        self.connected = True
        self.hostnqn = conn.hostnqn
        self.hostid = conn.hostid
        self.kato_ms = args.kato_ms
        self.connect_kato_ms = args.kato_ms
        self.connect_cattr = args.cattr
        return _Reply(dw0=self.cntlid)

    def _property_get(self, sqe: Sqe, data: bytes) -> _Reply:
        if not self.connected:
            return _Reply(SC_SEQUENCE_ERROR)
        prop = cmd.decode_property(sqe)
        values = {
            cmd.REG_CAP: cmd.Cap(mqes=31, cqr=True, to=1).encode(),
            cmd.REG_VS: VERSION,
            cmd.REG_CC: self.cc,
            cmd.REG_CSTS: self.csts,
        }
        if prop.offset not in values:
            return _Reply(SC_INVALID_FIELD)
        value = values[prop.offset]
        return _Reply(dw0=value & 0xFFFFFFFF, dw1=(value >> 32) if prop.eight_bytes else 0)

    def _property_set(self, sqe: Sqe, data: bytes) -> _Reply:
        if not self.connected:
            return _Reply(SC_SEQUENCE_ERROR)
        prop = cmd.decode_property(sqe)
        if prop.offset != cmd.REG_CC:
            return _Reply(SC_INVALID_FIELD)
        self.cc = (prop.value or 0) & 0xFFFFFFFF
        if self.cc & CC_EN:
            self.csts |= CSTS_RDY
        else:
            self.csts &= ~CSTS_RDY
            self._aers.clear()
            self._event_queued = False
        if (self.cc >> CC_SHN_SHIFT) & 0x3:
            self.csts |= CSTS_SHST_COMPLETE
        return _Reply()

    def _identify(self, sqe: Sqe, data: bytes) -> _Reply:
        if sqe.cdw10 & 0xFF != CNS_CONTROLLER:
            return _Reply(SC_INVALID_FIELD)
        return _Reply(data=self.identify().encode())

    def identify(self) -> IdentifyController:
        """Identify Controller data: a discovery controller with AEN and DCTYPE."""
        return IdentifyController(
            vid=0,
            ssvid=0,
            sn=f"SIM{self.port_id:04d}",
            mn="nvmet-sim discovery controller",
            fr="2.5.0",
            rab=0,
            ieee=0,
            cmic=0,
            mdts=MDTS,
            cntlid=self.cntlid,
            ver=VERSION,
            oaes=1 << 31,
            ctratt=0,
            cntrltype=int(CntrlType.DISCOVERY),
            aerl=AERL,
            lpa=1 << 2,
            kas=KAS,
            maxcmd=32,
            sgls=0x1 | (1 << 2) | (1 << 20),
            subnqn=self.model.dc_nqn,
            ioccsz=4,
            iorcsz=1,
            icdoff=0,
            fcatt=0,
            msdbd=1,
            ofcs=0,
            dctype=int(self.dctype),
        )

    def _get_log_page(self, sqe: Sqe, data: bytes) -> _Reply:
        try:
            args = cmd.decode_get_log_page(sqe)
        except ProtocolError:
            return _Reply(SC_INVALID_FIELD)
        if args.offset % 4 or args.length > MAX_TRANSFER or args.length == 0:
            return _Reply(SC_INVALID_FIELD)
        if args.lid == LogPageId.SUPPORTED_LOG_PAGES:
            page = encode_log_support(
                {LogPageId.SUPPORTED_LOG_PAGES: 1, LogPageId.DISCOVERY: LID70_SUPPORT}
            )
        elif args.lid == LogPageId.DISCOVERY:
            if len(self.log_page_lsps) < 1024:
                self.log_page_lsps.append(args.lsp)
            page = self._discovery_page(args.lsp, args.offset)
            if not args.rae:
                self.aen_pending = False
        else:
            return _Reply(SC_INVALID_LOG_PAGE)
        chunk = page[args.offset : args.offset + args.length]
        data = chunk + bytes(args.length - len(chunk))
        if args.lid == LogPageId.DISCOVERY and self.budget.faults.oversize_c2h:
            data += bytes(4)  # C2HData longer than asked: the host must drop the connection
        return _Reply(data=data)

    def _discovery_page(self, lsp: int, offset: int) -> bytes:
        if offset and self.budget.take_genctr_bump():
            self.model.bump()
        extended = bool(lsp & cmd.LSP_EXTDLPE)
        # A host reads one page in many chunks: build it once per GENCTR, not once per chunk.
        key = (self.model.genctr, lsp & (cmd.LSP_EXTDLPE | cmd.LSP_PLEO), self.hostnqn)
        if self._page_cache is None or self._page_cache[0] != key:
            log = self.model.log_page(
                self.port_id, pleo=bool(lsp & cmd.LSP_PLEO), extended=extended, hostnqn=self.hostnqn
            )
            self._page_cache = (key, log.encode(extended=extended))
        page = self._page_cache[1]  # not copied: a 10 MB page read in 16 KiB chunks stays linear
        if self.budget.faults.corrupt_log_page:
            head = bytearray(page[:CORRUPT_END])
            struct.pack_into("<QH", head, 8, CORRUPT_NUMREC, CORRUPT_RECFMT)
            page = bytes(head) + page[CORRUPT_END:]
        return page

    def _set_features(self, sqe: Sqe, data: bytes) -> _Reply:
        fid = sqe.cdw10 & 0xFF
        cdw11 = sqe.cdw11
        if fid == FeatureId.ASYNC_EVENT_CONFIG:
            self.aec = cdw11 & cmd.AEC_DISCOVERY_LOG_CHANGE
            return _Reply(dw0=self.aec)
        if fid == FeatureId.KEEP_ALIVE_TIMER:
            self.kato_ms = cdw11
            return _Reply(dw0=cdw11)
        return _Reply(SC_INVALID_FIELD)

    def _get_features(self, sqe: Sqe, data: bytes) -> _Reply:
        fid = sqe.cdw10 & 0xFF
        if fid == FeatureId.ASYNC_EVENT_CONFIG:
            return _Reply(dw0=self.aec)
        if fid == FeatureId.KEEP_ALIVE_TIMER:
            return _Reply(dw0=self.kato_ms)
        return _Reply(SC_INVALID_FIELD)

    def _aer(self, sqe: Sqe, data: bytes) -> _Reply:
        if len(self._aers) > AERL:
            return _Reply(SC_AER_LIMIT)
        self._aers.append(sqe.cid)
        return _Reply(deferred=True)

    def _dim(self, sqe: Sqe, data: bytes) -> _Reply:
        if self.dctype == DcType.NOT_REPORTED:
            return _Reply(SC_INVALID_OPCODE)
        tas = sqe.cdw10 & 0xF
        if tas not in (cmd.DimTas.REGISTER, cmd.DimTas.DEREGISTER, cmd.DimTas.UPDATE):
            return _Reply(SC_INVALID_FIELD)
        try:
            dim = DimData.decode(data)
        except ProtocolError:
            return _Reply(SC_INVALID_FIELD)
        hostnqn = dim.eid or self.hostnqn or ""
        if tas == cmd.DimTas.DEREGISTER:
            self.model.deregister(hostnqn)
        elif self.budget.take_dim_reject():
            return _Reply(SC_INVALID_FIELD)
        else:
            self.model.register(hostnqn, dim, self._clock())
        return _Reply()
