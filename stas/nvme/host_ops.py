"""Pieces of the userspace discovery host that do not need the session's state.

Kept apart from ``session.py`` so that module stays about the conversation itself: who the
host is (``HostIdentity``), how it behaves (``SessionOptions``), how the TCP connection is
opened (with clear errors), and the libnvme-style consistent read of the discovery log page
(over any ``read`` coroutine, so it can be exercised without sockets).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attrs
import trio

from stas.nvme import commands as cmd
from stas.nvme.commands import LogPageId, auth_required
from stas.nvme.errors import (
    ConnectionLost,
    ConnectionRefused,
    DiscoveryError,
    NvmeStatusError,
    ProtocolError,
    StepTimeout,
)

# Re-exported: host_ops was their home before the daemons needed them without the codecs.
from stas.nvme.hostid import NQN_UUID_PREFIX, HostIdentity, default_host_identity  # noqa: F401
from stas.nvme.identify import decode_supported_log_pages
from stas.nvme.logpage import (
    DiscoveryLogPage,
    Limits,
    LogPageHeader,
    decode_header,
    required_length,
)

log = logging.getLogger(__name__)

WELL_KNOWN_DISC_NQN = "nqn.2014-08.org.nvmexpress.discovery"
LOG_HEADER_SIZE = 1024
CSTS_POLL_S = 0.02  # CSTS polling period (10-50 ms like the Linux host)


@attrs.frozen
class SessionOptions:
    """How a discovery session behaves; the defaults match a Linux persistent DC connection."""

    kato_ms: int = 30000  # 0 = no keep-alive
    hdgst: bool = False
    ddgst: bool = False
    connect_timeout: float = 5.0
    command_timeout: float = 10.0
    chunk_size: int = 4096 * 4
    max_genctr_retries: int = 6
    limits: Limits = attrs.field(factory=Limits)
    register: bool = True  # DIM register when DCTYPE is DDC or CDC
    pleo: bool = False  # ask for port-local entries only, when supported
    extended: bool = False  # ask for extended entries, when supported
    persistent: bool = False  # AEN notices + an outstanding AER
    disable_sqflow: bool = False  # ask the DC not to use SQ flow control (Connect CATTR)
    # DH-HMAC-CHAP secrets (DHHC-1:..), used when the DC's Connect answer asks for them.
    dhchap_secret: str | None = attrs.field(default=None, repr=False)
    dhchap_ctrl_secret: str | None = attrs.field(default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.kato_ms <= 0xFFFFFFFF:
            raise ValueError(f"kato_ms {self.kato_ms} out of range")
        if self.chunk_size < 1024 or self.chunk_size % 4:
            raise ValueError(f"chunk_size {self.chunk_size} must be a multiple of 4, >= 1024")
        if self.max_genctr_retries < 0:
            raise ValueError(f"max_genctr_retries {self.max_genctr_retries} must be >= 0")


def format_address(host: str, port: int | str) -> str:
    """``[::1]:8009`` / ``192.0.2.1:8009``: how addresses appear in messages."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _port_number(trsvcid: int | str) -> int:
    try:
        port = int(trsvcid)
    except ValueError:
        raise DiscoveryError(f"invalid port {trsvcid!r}: not a number") from None
    if not 0 < port < 65536:
        raise DiscoveryError(f"invalid port {trsvcid!r}: must be 1-65535")
    return port


async def _resolve(host: str, port: int) -> list[tuple[Any, ...]]:
    try:
        # bytes: the standard library encodes a str host with its "idna" codec, whose import
        # (stringprep, Unicode tables) is ~0.8 MB of a daemon's RSS (issue 8). stas.resolve
        # does the same: not shared, as this package imports nothing outside it
        name = host.encode("ascii") if host.isascii() else host
        return await trio.socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise DiscoveryError(f"cannot resolve {host!r}: {exc.strerror}") from None


def _family_of(address: str) -> int | None:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


async def _connect_one(
    addrinfo: tuple[Any, ...], host_traddr: str | None, host_iface: str | None
) -> trio.SocketStream:
    family, type_, proto, _canon, sockaddr = addrinfo
    sock = trio.socket.socket(family, type_, proto)
    try:
        if host_iface:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, host_iface.encode())
            except PermissionError:
                raise DiscoveryError(
                    f"cannot bind to interface {host_iface!r}: permission denied "
                    "(SO_BINDTODEVICE needs CAP_NET_RAW)"
                ) from None
            except OSError as exc:
                raise DiscoveryError(
                    f"cannot bind to interface {host_iface!r}: {exc.strerror}"
                ) from None
        if host_traddr:
            try:
                await sock.bind((host_traddr, 0))
            except OSError as exc:
                raise DiscoveryError(
                    f"cannot bind to host address {host_traddr!r}: {exc.strerror}"
                ) from None
        await sock.connect(sockaddr)
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def open_stream(
    traddr: str,
    trsvcid: int | str,
    *,
    host_traddr: str | None = None,
    host_iface: str | None = None,
    timeout: float = 5.0,
) -> trio.SocketStream:
    """TCP connect to the DC, optionally from a given source address / interface.

    Errors are DiscoveryError subclasses that name the address: ConnectionRefused for a
    refused or unreachable peer, StepTimeout('TCP connect') when it does not answer.
    """
    port = _port_number(trsvcid)
    where = format_address(traddr, port)
    with trio.move_on_after(timeout) as scope:
        infos = await _resolve(traddr, port)
        if host_traddr is not None:
            wanted = _family_of(host_traddr)
            infos = [info for info in infos if wanted is None or info[0] == wanted]
            if not infos:
                raise DiscoveryError(
                    f"host address {host_traddr!r} and {where} are of different families"
                )
        last: OSError | None = None
        for info in infos:
            try:
                return await _connect_one(info, host_traddr, host_iface)
            except OSError as exc:
                last = exc
        assert last is not None  # getaddrinfo never returns an empty list
        if last.errno == errno.ECONNREFUSED:
            raise ConnectionRefused(f"connection to {where} refused")
        raise ConnectionRefused(f"cannot connect to {where}: {last.strerror or last}")
    assert scope.cancelled_caught
    raise StepTimeout(f"TCP connect to {where}", timeout)


@attrs.frozen
class LinkFailure:
    """Why a session's connection is unusable; becomes an exception naming the step."""

    reason: str  # e.g. "closed by peer"
    protocol: bool = False

    def exception(self, peer: str, step: str) -> Exception:
        if self.protocol:
            return ProtocolError(f"{peer}: {self.reason} (during {step})")
        return ConnectionLost(f"connection to {peer} {self.reason} during {step}")


# --- conversation steps over a command coroutine ---------------------------------------------


class Command(Protocol):
    """``DiscoverySession.command``: one admin command, raising on failure or bad status."""

    async def __call__(
        self, sqe: cmd.Sqe, *, data: bytes = b"", read_len: int = 0, name: str
    ) -> tuple[cmd.Cqe, bytes]: ...


CATTR_DISABLE_SQFLOW = 1 << 2  # Connect attribute: SQ flow control disabled (as Linux sets it)


async def connect_admin(
    command: Command,
    data: cmd.ConnectData,
    *,
    kato_ms: int,
    where: str,
    disable_sqflow: bool = False,
    dhchap_secret: str | None = None,
    dhchap_ctrl_secret: str | None = None,
) -> int:
    """Fabrics Connect on the admin queue (QID 0, SQSIZE 31), then DH-HMAC-CHAP when the DC
    asks for it (AuthenticationFailed otherwise); returns the CNTLID."""
    cattr = CATTR_DISABLE_SQFLOW if disable_sqflow else 0
    sqe = cmd.connect(kato_ms=kato_ms, sqsize=31, cattr=cattr)
    cqe, _ = await command(sqe, data=data.encode(), name="Connect")
    result = cmd.connect_result(cqe.dw0)
    if auth_required(cqe.dw0):
        from stas.nvme.auth_exchange import authenticate  # DH-HMAC-CHAP: only when asked

        await authenticate(
            command,
            hostnqn=data.hostnqn,
            subnqn=data.subnqn,
            secret=dhchap_secret,
            ctrl_secret=dhchap_ctrl_secret,
            where=where,
        )
    return result.cntlid


async def _get_property(command: Command, offset: int, name: str, *, eight: bool = False) -> int:
    cqe, _ = await command(cmd.property_get(offset, eight_bytes=eight), name=f"Property Get {name}")
    return cqe.dw0 | (cqe.dw1 << 32) if eight else cqe.dw0


async def enable_controller(command: Command, *, where: str) -> cmd.Cap:
    """Read CAP and VS, set CC.EN, poll CSTS.RDY for at most CAP.TO (min 500 ms)."""
    cap = cmd.Cap.decode(await _get_property(command, cmd.REG_CAP, "CAP", eight=True))
    await _get_property(command, cmd.REG_VS, "VS")
    await command(cmd.property_set(cmd.REG_CC, cmd.CC_ENABLE), name="Property Set CC")
    limit = max(cap.timeout_s, 0.5)
    with trio.move_on_after(limit):
        while True:
            csts = cmd.Csts.decode(await _get_property(command, cmd.REG_CSTS, "CSTS"))
            if csts.cfs:
                raise DiscoveryError(f"{where}: controller fatal status (CSTS.CFS=1)")
            if csts.rdy:
                return cap
            await trio.sleep(CSTS_POLL_S)
    raise StepTimeout("CSTS.RDY", limit)


async def shutdown_controller(command: Command) -> None:
    """CC.SHN = normal, then wait for CSTS.SHST = complete (the caller bounds the time)."""
    await command(cmd.property_set(cmd.REG_CC, cmd.CC_SHUTDOWN_NORMAL), name="Property Set CC")
    while cmd.Csts.decode(await _get_property(command, cmd.REG_CSTS, "CSTS")).shst != (
        cmd.CSTS_SHST_COMPLETE
    ):
        await trio.sleep(CSTS_POLL_S)


async def read_supported_log_pages(command: Command, where: str) -> dict[int, int]:
    """LID 00h; a DC that refuses it supports nothing optional (empty mapping)."""
    sqe = cmd.get_log_page(LogPageId.SUPPORTED_LOG_PAGES, offset=0, length=1024)
    try:
        _, data = await command(sqe, read_len=1024, name="Get Log Page (supported log pages)")
    except NvmeStatusError as exc:
        log.info("%s: %s", where, exc)
        return {}
    return decode_supported_log_pages(data.ljust(1024, b"\0"))


# --- the consistent log page read -------------------------------------------------------------

LogRead = Callable[[int, int, bool], Awaitable[bytes]]  # (offset, length, rae) -> data


def _checked_header(data: bytes, where: str, *, extended: bool, limits: Limits) -> LogPageHeader:
    """Decode the header and refuse, before allocating anything, what exceeds our caps."""
    try:
        header = decode_header(data)
    except ProtocolError as exc:
        raise ProtocolError(f"{where}: discovery log page header: {exc}") from None
    if header.recfmt != 0:
        raise ProtocolError(f"{where}: discovery log page RECFMT {header.recfmt} is unknown")
    if header.numrec > limits.max_records:
        raise ProtocolError(
            f"{where}: discovery log page NUMREC {header.numrec} exceeds the limit of "
            f"{limits.max_records} records"
        )
    total = required_length(header, extended=extended)
    if total is None:
        raise ProtocolError(f"{where}: discovery log page length cannot be determined")
    if total > limits.max_bytes:
        raise ProtocolError(
            f"{where}: discovery log page of {total} bytes exceeds the limit of "
            f"{limits.max_bytes} bytes"
        )
    return header


async def read_consistent_log(
    read: LogRead,
    *,
    where: str,
    chunk: int,
    extended: bool,
    limits: Limits,
    max_retries: int,
) -> DiscoveryLogPage:
    """libnvme's algorithm: header, entries in chunks, header again; retry while GENCTR moves.

    Every read keeps the AEN (RAE=1) except the closing header re-read (RAE=0), which
    therefore clears a pending discovery log change event once the page is known.
    """
    raw = await read(0, LOG_HEADER_SIZE, True)
    header = _checked_header(raw, where, extended=extended, limits=limits)
    moved = 0
    while True:
        total = required_length(header, extended=extended) or LOG_HEADER_SIZE
        parts = [raw[:LOG_HEADER_SIZE].ljust(LOG_HEADER_SIZE, b"\0")]
        offset = LOG_HEADER_SIZE
        while offset < total:
            length = min(chunk, _round_up4(total - offset))
            data = await read(offset, length, True)
            if len(data) < min(length, total - offset):
                raise ProtocolError(
                    f"{where}: Get Log Page returned {len(data)} bytes at offset {offset}, "
                    f"expected {length}"
                )
            parts.append(data)
            offset += length
        raw = await read(0, LOG_HEADER_SIZE, False)
        again = _checked_header(raw, where, extended=extended, limits=limits)
        if again.genctr == header.genctr:
            if again.numrec != header.numrec:
                raise ProtocolError(
                    f"{where}: discovery log NUMREC changed from {header.numrec} to "
                    f"{again.numrec} while GENCTR stayed {header.genctr}"
                )
            break
        moved += 1
        if moved > max_retries:
            raise DiscoveryError(f"{where}: log page kept changing (GENCTR moved {moved} times)")
        header = again
    page = b"".join(parts)[:total]
    try:
        return DiscoveryLogPage.decode(page, extended=extended, limits=limits)
    except ProtocolError as exc:
        raise ProtocolError(f"{where}: {exc}") from None


def _round_up4(n: int) -> int:
    return (n + 3) & ~3
