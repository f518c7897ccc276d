"""A hostile NVMe/TCP proxy: stream-level faults the simulator itself cannot make.

It sits between a host and a simulator port, frames PDUs (8-byte common header, PLEN) in
both directions, remembers which command each CID carries, and misbehaves on cue:

- never-answer: accept, read everything, send nothing (a wedged target).
- reset-mid-pdu: forward half of the first capsule response, then RST (SO_LINGER 0).
- drop-mid-log-page: forward half of the first log page data PDU, then close.
- ka-unanswered: swallow the responses to Keep Alive commands.
- bad-digest: flip a header digest byte of every response PDU that carries one.
- numrec=N: rewrite NUMREC in every log page read at offset 0 (short page, huge count).
- dim-reject: answer DIM (Discovery Information Management) with Invalid Field, DNR.
- pass: forward unchanged (only counts connections).

``accepted`` counts TCP connections, i.e. the host's connect attempts.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import trio

from stas.nvme.crc32c import crc32c

CAPSULE_CMD, CAPSULE_RESP, C2H_DATA = 4, 5, 7
FLAG_HDGST, FLAG_DDGST = 0x01, 0x02
OPC_GET_LOG_PAGE, OPC_KEEP_ALIVE, OPC_DIM = 0x02, 0x18, 0x21
LID_DISCOVERY = 0x70
STATUS_INVALID_FIELD_DNR = (0x02 << 1) | 0x8000
MODES = (
    "pass", "never-answer", "reset-mid-pdu", "drop-mid-log-page", "ka-unanswered",
    "bad-digest", "numrec", "dim-reject",
)  # fmt: skip


class HostileError(ValueError):
    """An unknown mode or a bad mode value."""


def parse_mode(spec: str) -> tuple[str, int]:
    """``"numrec=100000"`` -> ("numrec", 100000); other modes take no value."""
    name, sep, value = spec.partition("=")
    if name not in MODES:
        raise HostileError(f"unknown hostile mode {name!r} (known: {', '.join(MODES)})")
    if name == "numrec":
        try:
            number = int(value, 0)
        except ValueError:
            raise HostileError(f"numrec needs an integer value, not {value!r}") from None
        if not 0 <= number < 2**64:
            raise HostileError(f"numrec must fit 64 bits, not {number}")
        return name, number
    if sep:
        raise HostileError(f"hostile mode {name!r} takes no value")
    return name, 0


async def _read_pdu(stream: trio.SocketStream, buf: bytearray) -> bytes | None:
    """One whole PDU from ``stream`` (None at EOF); ``buf`` keeps the surplus."""
    while True:
        if len(buf) >= 8:
            plen = struct.unpack_from("<I", buf, 4)[0]
            if plen < 8 or plen > 16 * 1024 * 1024:
                return None  # not NVMe/TCP: give up on the connection
            if len(buf) >= plen:
                pdu = bytes(buf[:plen])
                del buf[:plen]
                return pdu
        data = await stream.receive_some(65536)
        if not data:
            return None
        buf += data


def _fix_hdgst(pdu: bytearray) -> None:
    if pdu[1] & FLAG_HDGST:
        hlen = pdu[2]
        pdu[hlen : hlen + 4] = struct.pack("<I", crc32c(pdu[:hlen]))


def _fix_ddgst(pdu: bytearray) -> None:
    if pdu[1] & FLAG_DDGST:
        pdo = pdu[3]
        pdu[-4:] = struct.pack("<I", crc32c(pdu[pdo:-4]))


class HostileProxy:
    """Listens on an ephemeral port of ``host`` and forwards to ``target``."""

    def __init__(self, target: tuple[str, int], mode: str = "pass") -> None:
        self.target = target
        self.mode, self.value = parse_mode(mode)
        self.accepted = 0
        self.port = 0
        self._commands: dict[tuple[int, int], tuple[int, int, int]] = {}  # (conn, cid) -> cmd

    async def _pump_host(self, conn: int, src, dst, buf: bytearray) -> None:
        while (pdu := await _read_pdu(src, buf)) is not None:
            if pdu[0] == CAPSULE_CMD and len(pdu) >= 72:
                opcode, cid = pdu[8], struct.unpack_from("<H", pdu, 10)[0]
                cdw10, lpol, lpou = struct.unpack_from("<I4xII", pdu, 48)
                self._commands[(conn, cid)] = (opcode, cdw10 & 0xFF, lpol | lpou << 32)
            if self.mode != "never-answer":
                await dst.send_all(pdu)

    async def _pump_target(self, conn: int, src, dst: trio.SocketStream, buf: bytearray) -> None:
        while (raw := await _read_pdu(src, buf)) is not None:
            pdu = bytearray(raw)
            kind, mode = pdu[0], self.mode
            if kind == CAPSULE_RESP and len(pdu) >= 24:
                cid = struct.unpack_from("<H", pdu, 20)[0]
                opcode = self._commands.get((conn, cid), (None,))[0]
                if mode == "reset-mid-pdu":
                    await dst.send_all(pdu[: len(pdu) // 2])
                    _reset(dst)
                    return
                if mode == "ka-unanswered" and opcode == OPC_KEEP_ALIVE:
                    continue
                if mode == "dim-reject" and opcode == OPC_DIM:
                    struct.pack_into("<H", pdu, 22, STATUS_INVALID_FIELD_DNR | (pdu[22] & 1))
                    _fix_hdgst(pdu)
            if kind == C2H_DATA and len(pdu) >= 24:
                cid, datao = struct.unpack_from("<H2xI", pdu, 8)
                opcode, lid, offset = self._commands.get((conn, cid), (None, 0, 0))
                log_page = opcode == OPC_GET_LOG_PAGE and lid == LID_DISCOVERY
                if mode == "drop-mid-log-page" and log_page:
                    await dst.send_all(pdu[: len(pdu) // 2])
                    return
                if mode == "numrec" and log_page and offset == 0 and datao == 0:
                    pdo = pdu[3]
                    if len(pdu) >= pdo + 16:
                        struct.pack_into("<Q", pdu, pdo + 8, self.value)
                        _fix_ddgst(pdu)
            if mode == "bad-digest" and pdu[1] & FLAG_HDGST and kind != 1:
                pdu[pdu[2]] ^= 0xFF
            await dst.send_all(pdu)

    async def _handle(self, host: trio.SocketStream) -> None:
        self.accepted += 1
        conn = self.accepted
        try:
            async with host:
                if self.mode == "never-answer":
                    with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        while await host.receive_some(65536):
                            pass
                    return
                target = await trio.open_tcp_stream(*self.target)
                async with target, trio.open_nursery() as nursery:

                    async def up() -> None:
                        await self._pump_host(conn, host, target, bytearray())
                        nursery.cancel_scope.cancel()

                    async def down() -> None:
                        await self._pump_target(conn, target, host, bytearray())
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(up)
                    nursery.start_soon(down)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            for key in [k for k in self._commands if k[0] == conn]:
                del self._commands[key]


def _reset(stream: trio.SocketStream) -> None:
    """Make the next close an RST instead of a FIN."""
    with suppress(OSError):
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@asynccontextmanager
async def open_hostile_proxy(
    target: tuple[str, int], mode: str = "pass", host: str = "::1"
) -> AsyncIterator[HostileProxy]:
    """Serve the proxy until the block exits; ``proxy.port`` is where hosts connect."""
    proxy = HostileProxy(target, mode)
    listeners = await trio.open_tcp_listeners(0, host=host)
    proxy.port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, proxy._handle, listeners)
        try:
            yield proxy
        finally:
            nursery.cancel_scope.cancel()
