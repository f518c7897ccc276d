"""Sans-IO NVMe/TCP connection state machines: events in from bytes, bytes out for actions.

``HostConnection`` is what a discovery client drives; ``ControllerConnection`` is its mirror,
used by the userspace target simulator and by tests. Neither touches a socket or a clock: the
caller feeds received bytes to ``receive`` and writes the bytes that the action methods return.
Every peer mistake raises ProtocolError; every local misuse raises ConnectionStateError.
"""

from __future__ import annotations

import enum
import struct

import attrs

from stas.nvme.errors import ProtocolError
from stas.nvme.pdu import (
    CQE_LEN,
    SQE_LEN,
    C2HData,
    C2HTermReq,
    CapsuleCmd,
    CapsuleResp,
    H2CTermReq,
    ICReq,
    ICResp,
    Pdu,
    encode_pdu,
)
from stas.nvme.pdu_decoder import PduDecoder

# A full 1 MiB data transfer in one PDU plus header, padding and digests must still fit.
DEFAULT_MAX_PDU_SIZE = (1 << 20) + 256
MAX_IN_CAPSULE_DATA = 8192  # what the Linux host uses for admin/fabrics commands
MIN_MAXH2CDATA = 4096
SGL_DATA_BLOCK_OFFSET = 0x01  # in-capsule data
SGL_TRANSPORT_DATA_BLOCK = 0x5A  # data moved by C2HData/H2CData


class ConnectionStateError(RuntimeError):
    """The local caller used the connection in the wrong state (a bug on our side)."""


@attrs.frozen
class Established:
    """The IC exchange is done; ``params`` is the peer's ICResp (host) or ICReq (controller)."""

    params: ICResp | ICReq


@attrs.frozen
class Completion:
    cid: int
    cqe: bytes
    data: bytes


@attrs.frozen
class CommandReceived:
    cid: int
    sqe: bytes
    data: bytes


@attrs.frozen
class Terminated:
    """The peer sent a termination request; the connection is closed."""

    fes: int
    fei: int
    reason: str


Event = Established | Completion | CommandReceived | Terminated


class _State(enum.Enum):
    IDLE = "idle"
    IC_PENDING = "IC exchange in progress"
    ESTABLISHED = "established"
    FAILED = "failed"
    CLOSED = "closed"


@attrs.define
class _Pending:
    """A command sent by the host and not yet completed: where its read data accumulates."""

    read_len: int
    chunks: list[bytes] = attrs.Factory(list)
    received: int = 0
    last_seen: bool = False


def _cid_of_sqe(sqe: bytes) -> int:
    return int.from_bytes(sqe[2:4], "little")


def _pdu_name(pdu: Pdu) -> str:
    return type(pdu).__name__


class _Base:
    """Shared plumbing: the decoder, state checks and the error/termination bookkeeping."""

    def __init__(self, max_pdu_size: int) -> None:
        self._decoder = PduDecoder(max_pdu_size=max_pdu_size)
        self._state = _State.IDLE
        self._hdgst = False
        self._ddgst = False
        self._peer_pda = 0  # alignment the peer asked for in the data we send

    @property
    def established(self) -> bool:
        return self._state is _State.ESTABLISHED

    @property
    def closed(self) -> bool:
        """True after a termination (either side) or a protocol error."""
        return self._state in (_State.CLOSED, _State.FAILED)

    def _feed(self, data: bytes) -> list[Pdu]:
        if self._state is _State.CLOSED:
            raise ConnectionStateError("connection is closed")
        if self._state is _State.FAILED:
            raise ProtocolError("connection already failed with a protocol error")
        try:
            return self._decoder.feed(data)
        except ProtocolError:
            self._state = _State.FAILED
            raise

    def _fail(self, message: str) -> ProtocolError:
        self._state = _State.FAILED
        return ProtocolError(message)

    def _encode(self, pdu: Pdu) -> bytes:
        return encode_pdu(pdu, hdgst=self._hdgst, ddgst=self._ddgst, pda=self._peer_pda)

    def _require_established(self, action: str) -> None:
        if self._state is not _State.ESTABLISHED:
            raise ConnectionStateError(f"cannot {action}: connection is {self._state.value}")

    def _terminated(self, pdu: H2CTermReq | C2HTermReq) -> Terminated:
        self._state = _State.CLOSED
        return Terminated(pdu.fes, pdu.fei, pdu.describe())

    def _terminate(self, pdu: H2CTermReq | C2HTermReq) -> bytes:
        if self._state is _State.CLOSED:
            raise ConnectionStateError("cannot terminate: connection is closed")
        self._state = _State.CLOSED
        return encode_pdu(pdu)


class HostConnection(_Base):
    """The host side: ICReq, then commands with CIDs allocated here, completions back."""

    def __init__(
        self, *, hdgst: bool = False, ddgst: bool = False, max_pdu_size: int = DEFAULT_MAX_PDU_SIZE
    ) -> None:
        super().__init__(max_pdu_size)
        self._want_hdgst = hdgst
        self._want_ddgst = ddgst
        self._pending: dict[int, _Pending] = {}
        self._next_cid = 0
        self.params: ICResp | None = None

    @property
    def outstanding(self) -> frozenset[int]:
        return frozenset(self._pending)

    def start(self) -> bytes:
        """Return the ICReq that opens the conversation (only once)."""
        if self._state is not _State.IDLE:
            raise ConnectionStateError(f"start() called twice (connection is {self._state.value})")
        self._state = _State.IC_PENDING
        return encode_pdu(ICReq(hdgst=self._want_hdgst, ddgst=self._want_ddgst))

    def receive(self, data: bytes) -> list[Event]:
        if self._state is _State.IDLE:
            raise self._fail("controller sent data before the ICReq")
        events: list[Event] = []
        pdus = self._feed(data)
        while pdus:
            for pdu in pdus:
                event = self._handle(pdu)
                if event is not None:
                    events.append(event)
                if self._state is _State.CLOSED:
                    return events
            # The decoder pauses after ICResp until the digests are set; continue from there.
            pdus = self._feed(b"") if self._decoder.buffered else []
        return events

    def _handle(self, pdu: Pdu) -> Event | None:
        if isinstance(pdu, C2HTermReq):
            return self._terminated(pdu)
        if self._state is _State.IC_PENDING:
            if not isinstance(pdu, ICResp):
                raise self._fail(f"expected ICResp, got {_pdu_name(pdu)}")
            return self._on_icresp(pdu)
        if isinstance(pdu, C2HData):
            return self._on_c2h_data(pdu)
        if isinstance(pdu, CapsuleResp):
            cid = int.from_bytes(pdu.cqe[12:14], "little")
            pending = self._pop(cid, "CapsuleResp")
            return Completion(cid, pdu.cqe, b"".join(pending.chunks))
        raise self._fail(f"unexpected {_pdu_name(pdu)} from the controller")

    def _on_icresp(self, resp: ICResp) -> Established:
        if resp.pfv != 0:
            raise self._fail(f"ICResp PFV {resp.pfv} unsupported (expected 0)")
        if resp.maxh2cdata < MIN_MAXH2CDATA:
            raise self._fail(f"ICResp MAXH2CDATA {resp.maxh2cdata} below {MIN_MAXH2CDATA}")
        for name, got, asked in (
            ("header", resp.hdgst, self._want_hdgst),
            ("data", resp.ddgst, self._want_ddgst),
        ):
            if got and not asked:
                raise self._fail(f"ICResp enables a {name} digest that was not requested")
        self._hdgst, self._ddgst = resp.hdgst, resp.ddgst
        self._peer_pda = resp.cpda
        self._decoder.set_digests(resp.hdgst, resp.ddgst)
        self._state = _State.ESTABLISHED
        self.params = resp
        return Established(resp)

    def _on_c2h_data(self, pdu: C2HData) -> Completion | None:
        cid = pdu.cccid
        pending = self._pending.get(cid)
        if pending is None:
            raise self._fail(f"C2HData for unknown CID {cid}")
        if pending.last_seen:
            raise self._fail(f"C2HData for CID {cid} after its LAST_PDU")
        if pdu.datao != pending.received:
            raise self._fail(
                f"C2HData DATAO {pdu.datao} for CID {cid}, expected {pending.received}"
            )
        if pending.received + len(pdu.data) > pending.read_len:
            raise self._fail(
                f"C2HData for CID {cid} exceeds the {pending.read_len} bytes expected "
                f"(DATAO {pdu.datao}, DATAL {len(pdu.data)})"
            )
        pending.chunks.append(pdu.data)
        pending.received += len(pdu.data)
        pending.last_seen = pdu.last
        if not pdu.success:
            return None
        del self._pending[cid]
        cqe = bytes(12) + struct.pack("<HH", cid, 0)
        return Completion(cid, cqe, b"".join(pending.chunks))

    def _pop(self, cid: int, what: str) -> _Pending:
        pending = self._pending.pop(cid, None)
        if pending is None:
            raise self._fail(f"{what} for unknown CID {cid}")
        return pending

    def send_command(
        self, sqe: bytes, *, data: bytes = b"", read_len: int = 0
    ) -> tuple[int, bytes]:
        """Allocate a CID, fill in PSDT and SGL1, and return (cid, CapsuleCmd bytes).

        ``data`` travels in-capsule (at most 8 KiB); ``read_len`` is the most data the
        controller may return for this command.
        """
        self._require_established("send a command")
        if len(sqe) != SQE_LEN:
            raise ValueError(f"SQE must be {SQE_LEN} bytes, got {len(sqe)}")
        if len(data) > MAX_IN_CAPSULE_DATA:
            raise ValueError(f"in-capsule data of {len(data)} bytes exceeds {MAX_IN_CAPSULE_DATA}")
        if not 0 <= read_len <= 0xFFFFFFFF:
            raise ValueError(f"read_len {read_len} out of range")
        if data and read_len:
            raise ValueError("a command cannot both send and receive data")
        cid = self._allocate_cid()
        buf = bytearray(sqe)
        buf[2:4] = cid.to_bytes(2, "little")
        buf[1] = 0x40 | (buf[1] & 0x3F)
        length = len(data) if data else read_len
        sgl_type = SGL_DATA_BLOCK_OFFSET if data else SGL_TRANSPORT_DATA_BLOCK
        buf[24:40] = struct.pack("<QI3xB", 0, length, sgl_type)
        wire = self._encode(CapsuleCmd(bytes(buf), data))
        self._pending[cid] = _Pending(read_len)
        return cid, wire

    def _allocate_cid(self) -> int:
        for step in range(1 << 16):
            cid = (self._next_cid + step) & 0xFFFF
            if cid not in self._pending:
                self._next_cid = (cid + 1) & 0xFFFF
                return cid
        raise ConnectionStateError("all 65536 command identifiers are outstanding")

    def terminate(self, fes: int, fei: int = 0, *, header: bytes = b"") -> bytes:
        """Return an H2CTermReq; the connection is closed afterwards (also after a failure)."""
        return self._terminate(H2CTermReq(fes, fei, header))


class ControllerConnection(_Base):
    """The controller side: answer the ICReq, report commands, send data and completions."""

    def __init__(self, *, max_pdu_size: int = DEFAULT_MAX_PDU_SIZE) -> None:
        super().__init__(max_pdu_size)
        self._commands: set[int] = set()
        self.params: ICReq | None = None

    @property
    def outstanding(self) -> frozenset[int]:
        """CIDs received and not yet completed."""
        return frozenset(self._commands)

    def receive(self, data: bytes) -> list[Event]:
        """Decode host bytes. PDUs that follow the ICReq wait until ``accept`` is called."""
        events: list[Event] = []
        for pdu in self._feed(data):
            event = self._handle(pdu)
            events.append(event)
            if self._state is _State.CLOSED:
                break
        return events

    def _handle(self, pdu: Pdu) -> Event:
        if isinstance(pdu, H2CTermReq):
            return self._terminated(pdu)
        if self._state is _State.IDLE:
            if not isinstance(pdu, ICReq):
                raise self._fail(f"expected ICReq, got {_pdu_name(pdu)}")
            if pdu.pfv != 0:
                raise self._fail(f"ICReq PFV {pdu.pfv} unsupported (expected 0)")
            self._state = _State.IC_PENDING
            self.params = pdu
            self._peer_pda = pdu.hpda
            return Established(pdu)
        if isinstance(pdu, CapsuleCmd):
            return self._on_command(pdu)
        raise self._fail(f"unexpected {_pdu_name(pdu)} from the host")

    def _on_command(self, pdu: CapsuleCmd) -> CommandReceived:
        cid = _cid_of_sqe(pdu.sqe)
        if cid in self._commands:
            raise self._fail(f"CapsuleCmd reuses outstanding CID {cid}")
        length = int.from_bytes(pdu.sqe[32:36], "little")
        sgl_type = pdu.sqe[39]
        if pdu.data and sgl_type != SGL_DATA_BLOCK_OFFSET:
            raise self._fail(
                f"CapsuleCmd CID {cid} carries in-capsule data but SGL type is 0x{sgl_type:02x}"
            )
        if sgl_type == SGL_DATA_BLOCK_OFFSET and length != len(pdu.data):
            raise self._fail(
                f"CapsuleCmd CID {cid} SGL length {length} but {len(pdu.data)} in-capsule bytes"
            )
        self._commands.add(cid)
        return CommandReceived(cid, pdu.sqe, pdu.data)

    def accept(self, *, hdgst: bool, ddgst: bool, cpda: int = 0, maxh2cdata: int = 131072) -> bytes:
        """Answer the ICReq: the negotiated digests are those requested *and* allowed here."""
        if self._state is not _State.IC_PENDING or self.params is None:
            raise ConnectionStateError(f"cannot accept: connection is {self._state.value}")
        if maxh2cdata < MIN_MAXH2CDATA:
            raise ValueError(f"maxh2cdata {maxh2cdata} below {MIN_MAXH2CDATA}")
        resp = ICResp(
            cpda=cpda,
            hdgst=hdgst and self.params.hdgst,
            ddgst=ddgst and self.params.ddgst,
            maxh2cdata=maxh2cdata,
        )
        self._hdgst, self._ddgst = resp.hdgst, resp.ddgst
        self._decoder.set_digests(resp.hdgst, resp.ddgst)
        self._state = _State.ESTABLISHED
        return encode_pdu(resp)

    def complete(
        self, cid: int, cqe: bytes, data: bytes = b"", *, chunk: int = 65536, success: bool = False
    ) -> bytes:
        """Return C2HData PDU(s) carrying ``data`` and then the CapsuleResp for ``cid``.

        With ``success`` (and data) the last C2HData carries SUCCESS and no CapsuleResp is sent,
        as ceph-nvmeof and Linux with SQ flow control disabled do.
        """
        self._require_established("complete a command")
        if cid not in self._commands:
            raise ValueError(f"CID {cid} is not an outstanding command")
        if len(cqe) != CQE_LEN:
            raise ValueError(f"CQE must be {CQE_LEN} bytes, got {len(cqe)}")
        if chunk <= 0:
            raise ValueError(f"chunk must be positive, got {chunk}")
        if success and not data:
            raise ValueError("a SUCCESS completion needs data to carry the flag")
        parts = []
        for offset in range(0, len(data), chunk):
            piece = data[offset : offset + chunk]
            last = offset + len(piece) == len(data)
            parts.append(self._encode(C2HData(cid, offset, piece, last, success and last)))
        if not success:
            patched = cqe[:12] + cid.to_bytes(2, "little") + cqe[14:]
            parts.append(self._encode(CapsuleResp(patched)))
        self._commands.discard(cid)
        return b"".join(parts)

    def terminate(self, fes: int, fei: int = 0, *, header: bytes = b"") -> bytes:
        """Return a C2HTermReq; the connection is closed afterwards (also after a failure)."""
        return self._terminate(C2HTermReq(fes, fei, header))
