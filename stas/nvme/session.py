"""A userspace NVMe/TCP discovery host on Trio: one admin queue to one discovery controller.

The sans-IO ``HostConnection`` does the PDU work; this module adds the sockets, the clock and
the order of the conversation (peers-and-specs.md §2.9). One reader task owns the receive
side and routes completions to the command waiting for them, so commands, the keep-alive
timer and the outstanding AER can share the queue without stepping on each other.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

from stas.backoff import doubling
from stas.nvme import commands as cmd
from stas.nvme.commands import AenInfo, Cap, ConnectData, Cqe, DimTas, LogPageId
from stas.nvme.connection import Completion, Established, HostConnection, Terminated
from stas.nvme.dim import host_registration
from stas.nvme.errors import (
    ConnectionLost,
    ConnectionRefused,
    DiscoveryError,
    NvmeStatusError,
    ProtocolError,
    StepTimeout,
)
from stas.nvme.host_ops import (
    WELL_KNOWN_DISC_NQN,
    HostIdentity,
    LinkFailure,
    SessionOptions,
    connect_admin,
    enable_controller,
    format_address,
    open_stream,
    read_consistent_log,
    read_supported_log_pages,
    shutdown_controller,
)
from stas.nvme.identify import DiscoveryLogSupport, IdentifyController
from stas.nvme.logpage import AdrFam, DiscoveryLogPage

__all__ = [
    "WELL_KNOWN_DISC_NQN",
    "DiscoverySession",
    "HostIdentity",
    "SessionOptions",
]

log = logging.getLogger(__name__)

RECV_SIZE = 65536
AEN_BUFFER = 16  # discovery log change notices coalesce; more than this would be a storm
SHUTDOWN_BUDGET_S = 5.0
# A DC that refuses DIM is still used; registration is tried again this slowly (doubling).
DIM_RETRY_FIRST_S = 60.0
DIM_RETRY_MAX_S = 3600.0


@attrs.define
class _Waiter:
    """One command waiting for its completion (or for the connection to die)."""

    name: str
    done: trio.Event = attrs.Factory(trio.Event)
    cqe: bytes = b""
    data: bytes = b""
    error: Exception | None = None


@attrs.frozen
class _KeepAliveExpired(LinkFailure):
    """A Keep Alive went unanswered: the message is the whole story, whatever step asks."""

    def exception(self, peer: str, step: str) -> Exception:
        return ConnectionLost(f"connection to {peer} lost: {self.reason}")


class AenStream:
    """``async for aen in session.aens()``: AenInfo values until the connection ends."""

    def __init__(self, session: DiscoverySession) -> None:
        self._session = session

    def __aiter__(self) -> AenStream:
        return self

    async def __anext__(self) -> AenInfo:
        try:
            return await self._session._aen_recv.receive()
        except trio.EndOfChannel:
            self._session._raise_if_failed("AEN wait")
            raise StopAsyncIteration from None


class DiscoverySession:
    """An open admin connection to one discovery controller; create it with ``open``."""

    def __init__(
        self,
        stream: trio.SocketStream,
        nursery: trio.Nursery,
        *,
        subsysnqn: str,
        host: HostIdentity,
        options: SessionOptions,
        peer: str,
    ) -> None:
        self._stream = stream
        self._nursery = nursery
        self._subsysnqn = subsysnqn
        self._host = host
        self._options = options
        self._peer = peer
        self._conn = HostConnection(hdgst=options.hdgst, ddgst=options.ddgst)
        self._send_lock = trio.Lock()
        self._waiters: dict[int, _Waiter] = {}
        self._established = trio.Event()
        self._reader_scope = trio.CancelScope(shield=True)
        self._failure: LinkFailure | None = None
        self._aer_cids: set[int] = set()
        self._aen_send, self._aen_recv = trio.open_memory_channel[AenInfo](AEN_BUFFER)
        self._identify: IdentifyController | None = None
        self._cap: Cap | None = None
        self._cntlid = 0
        self._registered = False
        self._registration_error = ""
        self._up = False
        self._supported: DiscoveryLogSupport | None = None
        self._supported_pages: dict[int, int] | None = None

    # --- lifetime ---------------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        traddr: str,
        trsvcid: int | str,
        *,
        subsysnqn: str = WELL_KNOWN_DISC_NQN,
        host: HostIdentity,
        options: SessionOptions = SessionOptions(),  # noqa: B008 - frozen value
        host_traddr: str | None = None,
        host_iface: str | None = None,
    ) -> AsyncIterator[DiscoverySession]:
        """Connect, bring the controller up, yield the session; shut it down on exit."""
        stream = await open_stream(
            traddr,
            trsvcid,
            host_traddr=host_traddr,
            host_iface=host_iface,
            timeout=options.connect_timeout,
        )
        peer = format_address(*stream.socket.getpeername()[:2])
        raised: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                session = cls(
                    stream, nursery, subsysnqn=subsysnqn, host=host, options=options, peer=peer
                )
                nursery.start_soon(session._reader)
                # Exceptions are carried out of the nursery by hand so callers see the
                # DiscoveryError itself, not an ExceptionGroup around it.
                try:
                    try:
                        await session._bring_up()
                        yield session
                    finally:
                        await session._shut_down()
                except BaseException as exc:
                    raised = exc
                finally:
                    session._reader_scope.cancel()
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()
        if raised is not None:
            raise raised

    async def _bring_up(self) -> None:
        opts = self._options
        await self._send(self._conn.start(), "ICReq")
        with trio.move_on_after(opts.connect_timeout) as scope:
            await self._established.wait()
        if scope.cancelled_caught:
            raise StepTimeout("ICResp", opts.connect_timeout)
        if self._failure is not None and not self._failure.protocol:
            # A DC that hangs up before the IC exchange has refused us (nvmet does this too).
            raise ConnectionRefused(
                f"connection to {self._peer} refused: {self._failure.reason} before ICResp"
            )
        self._raise_if_failed("ICResp")
        host = self._host
        data = ConnectData(host.hostid, cmd.CNTLID_DYNAMIC, self._subsysnqn, host.hostnqn)
        self._cntlid = await connect_admin(
            self.command,
            data,
            kato_ms=opts.kato_ms,
            where=self._peer,
            disable_sqflow=opts.disable_sqflow,
            dhchap_secret=opts.dhchap_secret,
            dhchap_ctrl_secret=opts.dhchap_ctrl_secret,
        )
        self._cap = await enable_controller(self.command, where=self._peer)
        _, identify = await self.command(
            cmd.identify_controller(), read_len=cmd.IDENTIFY_DATA_SIZE, name="Identify"
        )
        try:
            self._identify = IdentifyController.decode(identify)
        except ProtocolError as exc:
            raise ProtocolError(f"{self._peer}: Identify Controller: {exc}") from None
        if opts.register and self._identify.is_registration_supported:
            await self._register_or_carry_on()
        if opts.pleo or opts.extended:
            await self.supported_log_pages()
        if opts.persistent and self._identify.supports_discovery_log_change_notices:
            await self.command(
                cmd.set_features(cmd.FeatureId.ASYNC_EVENT_CONFIG, cmd.AEC_DISCOVERY_LOG_CHANGE),
                name="Set Features (Async Event Configuration)",
            )
            await self._submit_aer()
        if opts.kato_ms:
            self._nursery.start_soon(self._keep_alive_loop)
        self._up = True

    async def _shut_down(self) -> None:
        """Best effort and bounded: deregister, CC.SHN, wait for SHST; never raises."""
        if self._failure is not None or not (self._up or self._registered):
            return  # nothing to undo, or nobody left to tell
        with trio.move_on_after(SHUTDOWN_BUDGET_S, shield=True):
            try:
                if self._registered:
                    await self.register(DimTas.DEREGISTER)
            except (DiscoveryError, NvmeStatusError, ProtocolError) as exc:
                log.info("%s: DIM deregister failed: %s", self._peer, exc)
            try:
                await shutdown_controller(self.command)
            except (DiscoveryError, NvmeStatusError, ProtocolError) as exc:
                log.info("%s: shutdown: %s", self._peer, exc)

    # --- properties -------------------------------------------------------------------------

    @property
    def identify(self) -> IdentifyController:
        assert self._identify is not None, "session not brought up"
        return self._identify

    @property
    def cntlid(self) -> int:
        return self._cntlid

    @property
    def registered(self) -> bool:
        return self._registered

    @property
    def registration_error(self) -> str:
        """Why the DC refused DIM registration ("" when it did not): the DC is used anyway."""
        return self._registration_error

    @property
    def local_address(self) -> tuple[str, int]:
        host, port = self._stream.socket.getsockname()[:2]
        return host, port

    @property
    def peer_address(self) -> tuple[str, int]:
        host, port = self._stream.socket.getpeername()[:2]
        return host, port

    @property
    def alive(self) -> bool:
        """False once the link failed (closed, reset, bad PDU): every command would fail."""
        return self._failure is None

    @property
    def supported(self) -> DiscoveryLogSupport | None:
        return self._supported

    @property
    def cap(self) -> Cap | None:
        return self._cap

    # --- commands ---------------------------------------------------------------------------

    async def command(
        self,
        sqe: cmd.Sqe,
        *,
        data: bytes = b"",
        read_len: int = 0,
        name: str,
        timeout: float | None = None,
    ) -> tuple[Cqe, bytes]:
        """Submit one admin command and wait for its completion (command_timeout)."""
        if timeout is None:
            timeout = self._options.command_timeout
        with trio.move_on_after(timeout) as scope:
            waiter = await self._submit(sqe, data=data, read_len=read_len, name=name)
            assert waiter is not None
            await waiter.done.wait()
        if scope.cancelled_caught:
            raise StepTimeout(name, timeout)
        assert waiter is not None  # mypy forgets the narrowing across the cancel scope
        if waiter.error is not None:
            raise waiter.error
        cqe = Cqe.decode(waiter.cqe)
        if not cqe.ok:
            raise NvmeStatusError(name, cqe.status, cqe.status_name)
        return cqe, waiter.data

    async def _submit(
        self, sqe: cmd.Sqe, *, data: bytes, read_len: int, name: str, aer: bool = False
    ) -> _Waiter | None:
        """Send one command; its completion goes to the returned waiter (or the AEN path)."""
        self._raise_if_failed(name)
        waiter = None if aer else _Waiter(name)
        async with self._send_lock:
            self._raise_if_failed(name)
            cid, wire = self._conn.send_command(sqe.encode(), data=data, read_len=read_len)
            if waiter is None:
                self._aer_cids.add(cid)
            else:
                self._waiters[cid] = waiter
            await self._send(wire, name)
        return waiter

    async def _send(self, wire: bytes, name: str) -> None:
        try:
            await self._stream.send_all(wire)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._fail(LinkFailure(f"{_socket_reason(exc)} while sending"))
            self._raise_if_failed(name)
        except trio.Cancelled:
            # A half-written PDU leaves the byte stream unusable.
            self._fail(LinkFailure("was abandoned mid-PDU after a timeout"))
            raise

    def _raise_if_failed(self, step: str) -> None:
        if self._failure is not None:
            raise self._failure.exception(self._peer, step)

    async def keep_alive(self, timeout: float | None = None) -> None:
        await self.command(cmd.keep_alive(), name="Keep Alive", timeout=timeout)

    async def register(self, tas: DimTas) -> None:
        """DIM: register / deregister / update this host with the DC (DDC or CDC)."""
        family = self._stream.socket.family
        adrfam = AdrFam.IPV6 if family == socket.AF_INET6 else AdrFam.IPV4
        host = self._host
        payload = host_registration(
            hostnqn=host.hostnqn,
            hostid=host.hostid,
            hostname=host.hostname,
            os_version=host.os_version,
            symname=host.symname,
            adrfam=adrfam,
        ).encode()
        label = DimTas(tas).name.lower()
        await self.command(
            cmd.dim(DimTas(tas), data_length=len(payload)), data=payload, name=f"DIM {label}"
        )
        self._registered = tas != DimTas.DEREGISTER

    async def supported_log_pages(self) -> dict[int, int]:
        """LID 00h, read once; also sets ``supported`` (all False if the DC refuses it)."""
        if self._supported_pages is None:
            self._supported_pages = await read_supported_log_pages(self.command, self._peer)
            self._supported = DiscoveryLogSupport.from_dword(
                self._supported_pages.get(LogPageId.DISCOVERY, 0)
            )
        return dict(self._supported_pages)

    async def get_log_page(self, *, lsp: int | None = None) -> DiscoveryLogPage:
        """The discovery log page, read consistently (GENCTR checked, bounded retries)."""
        opts = self._options
        if lsp is None:
            wanted = (cmd.LSP_PLEO if opts.pleo else 0) | (cmd.LSP_EXTDLPE if opts.extended else 0)
            lsp = wanted & self._supported.supported_lsp if self._supported else 0
        chunk = opts.chunk_size
        mdts = self.identify.mdts_bytes(self._cap.mpsmin_bytes if self._cap else 4096)
        if mdts is not None:
            chunk = min(chunk, mdts)

        async def read(offset: int, length: int, rae: bool) -> bytes:
            sqe = cmd.get_log_page(
                LogPageId.DISCOVERY, offset=offset, length=length, lsp=lsp, rae=rae
            )
            _, data = await self.command(sqe, read_len=length, name="Get Log Page")
            return data

        return await read_consistent_log(
            read,
            where=self._peer,
            chunk=chunk,
            extended=bool(lsp & cmd.LSP_EXTDLPE),
            limits=opts.limits,
            max_retries=opts.max_genctr_retries,
        )

    def aens(self) -> AenStream:
        """Asynchronous events as they arrive; ends with ConnectionLost if the DC goes away.

        A plain iterator object rather than an async generator, so a timeout around one
        ``anext`` does not end the stream.
        """
        return AenStream(self)

    # --- background tasks -------------------------------------------------------------------

    async def _submit_aer(self) -> None:
        try:
            await self._submit(
                cmd.async_event_request(), data=b"", read_len=0, name="AER", aer=True
            )
        except (DiscoveryError, ProtocolError) as exc:
            log.info("%s: cannot submit an AER: %s", self._peer, exc)

    async def _keep_alive_loop(self) -> None:
        """A Keep Alive every KATO/2, as Linux does, whether or not the last one was answered.

        Each one has its own deadline (KATO, or the command timeout if shorter), so a DC that
        stops answering is declared lost within KATO of the first unanswered Keep Alive, and
        the DC's own KATO timer keeps being fed meanwhile.
        """
        kato = self._options.kato_ms / 1000
        timeout = min(kato, self._options.command_timeout)
        while self._failure is None:
            await trio.sleep(kato / 2)
            if self._failure is None:
                self._nursery.start_soon(self._one_keep_alive, kato, timeout)

    async def _one_keep_alive(self, kato: float, timeout: float) -> None:
        try:
            await self.keep_alive(timeout)
        except StepTimeout:
            self._fail(
                _KeepAliveExpired(f"no answer to Keep Alive within {timeout:g} s (KATO {kato:g} s)")
            )
        except NvmeStatusError as exc:
            log.warning("%s: %s", self._peer, exc)
        except (DiscoveryError, ProtocolError):
            pass  # the link already failed; that failure is what callers see

    async def _register_or_carry_on(self) -> None:
        """DIM register; a refusal (a status) is logged once and the DC is used anyway.

        Upstream does the same: a CDC that will not take our registration still serves its
        log page and AENs. A long-lived session asks again on a slow, doubling backoff.
        """
        try:
            await self.register(DimTas.REGISTER)
            return
        except NvmeStatusError as exc:
            self._registration_error = str(exc)
        long_lived = self._options.persistent or self._options.kato_ms > 0
        log.warning(
            "%s: DIM registration refused: %s; the DC is used unregistered%s",
            self._peer,
            self._registration_error,
            f" (asking again in {DIM_RETRY_FIRST_S:g} s)" if long_lived else "",
        )
        if long_lived:
            self._nursery.start_soon(self._retry_registration)

    async def _retry_registration(self) -> None:
        for delay in doubling(DIM_RETRY_FIRST_S, DIM_RETRY_MAX_S):
            await trio.sleep(delay)
            try:
                await self.register(DimTas.REGISTER)
            except NvmeStatusError as exc:
                self._registration_error = str(exc)
                log.debug("%s: DIM registration refused again: %s", self._peer, exc)
                continue
            except (DiscoveryError, ProtocolError):
                return  # the link is gone; the session's owner sees that
            self._registration_error = ""
            log.info("%s: DIM registration accepted", self._peer)
            return

    async def _reader(self) -> None:
        """Own the receive side; on any end, record why and wake every waiter.

        Shielded so that a caller's cancellation still lets the shutdown conversation
        (DIM deregister, CC.SHN) get its completions; ``open`` ends it explicitly.
        """
        with self._reader_scope:
            await self._read_loop()

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self._stream.receive_some(RECV_SIZE)
                if not data:
                    self._fail(LinkFailure("closed by peer"))
                    return
                for event in self._conn.receive(data):
                    if isinstance(event, Established):
                        self._established.set()
                    elif isinstance(event, Completion):
                        self._complete(event)
                    elif isinstance(event, Terminated):
                        self._fail(LinkFailure(f"terminated by the controller: {event.reason}"))
                        return
        except ProtocolError as exc:
            self._fail(LinkFailure(f"protocol error: {exc}", protocol=True))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._fail(LinkFailure(_socket_reason(exc)))

    def _complete(self, event: Completion) -> None:
        if event.cid in self._aer_cids:
            self._aer_cids.discard(event.cid)
            cqe = Cqe.decode(event.cqe)
            if not cqe.ok:
                log.info("%s: AER completed with %s", self._peer, cqe.status_name)
                return
            try:
                self._aen_send.send_nowait(AenInfo.decode(cqe.dw0))
            except trio.WouldBlock:
                log.warning("%s: AEN dropped (%d unread)", self._peer, AEN_BUFFER)
            self._nursery.start_soon(self._submit_aer)
            return
        waiter = self._waiters.pop(event.cid, None)
        if waiter is None:  # a command we stopped waiting for (timed out)
            return
        waiter.cqe, waiter.data = event.cqe, event.data
        waiter.done.set()

    def _fail(self, failure: LinkFailure) -> None:
        if self._failure is not None:
            return
        self._failure = failure
        self._established.set()
        for waiter in self._waiters.values():
            waiter.error = failure.exception(self._peer, waiter.name)
            waiter.done.set()
        self._waiters.clear()
        self._aen_send.close()


def _socket_reason(exc: BaseException) -> str:
    """'reset by peer' rather than trio's wrapper text around the OSError."""
    cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else exc
    if isinstance(cause, ConnectionResetError):
        return "reset by peer"
    if isinstance(cause, OSError):
        return f"failed ({cause.strerror or cause})"
    return f"failed ({cause or type(cause).__name__})"
