"""stafd's kernel backend: discovery controllers as kernel controllers (nvmeN), like upstream.

Connect (or adopt an existing discovery controller) through the Kernel interface; read the log
page and register (TP8010 DIM) with admin passthru commands built by stas.nvme.commands; follow
the kernel's uevents for the device (``NVME_AEN=0x70f002``, ``NVME_EVENT=rediscover``,
``remove``), routed by a ``UeventHub`` fed from the uevent monitor.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import attrs
import trio
from trio_util import wait_any

from stas import net
from stas.actors.dc_backend import (
    ConnectionLostEvent,
    DcEvent,
    LogPagesChangedEvent,
    ReconnectedEvent,
    flag_from,
    int_from,
    kato_ms_from,
    pleo_from,
)
from stas.kernel.api import ConnectRequest, Kernel, KernelController, KernelError, Uevent
from stas.kernel.options import InvalidOption
from stas.kernel.passthru import admin_command
from stas.messages import KernelResync, Tid
from stas.messages_stafd import HubControl, HubSubscribe, HubUnsubscribe
from stas.nvme import commands as cmd
from stas.nvme.dim import host_registration
from stas.nvme.errors import DiscoveryError, NvmeStatusError
from stas.nvme.host_ops import HostIdentity, read_consistent_log
from stas.nvme.identify import DiscoveryLogSupport, decode_supported_log_pages
from stas.nvme.logpage import AdrFam, DiscoveryLogPage, Limits
from stas.tls_policy import tls_fields

KernelNotice = Uevent | KernelResync  # what the uevent monitor sends the hub

log = logging.getLogger("stas.dc.kernel")
AEN_DLP_CHANGED = 0x70F002
CHUNK = 16 * 1024


class UeventHub:
    """Routes kernel events to the DC connection that owns the device.

    The subscriber table belongs to the hub's own task (``run``): DC connections ask to be
    added or removed by message (``HubSubscribe``/``HubUnsubscribe``), never touch it.
    """

    def __init__(self, control_buffer: int = 256) -> None:
        self._subs: dict[str, trio.MemorySendChannel[DcEvent]] = {}
        self._control_send, self._control = trio.open_memory_channel[HubControl](control_buffer)

    # --- asked by DC connections (their own tasks) -----------------------------------------

    async def subscribe(self, device: str) -> trio.MemoryReceiveChannel[DcEvent]:
        """A channel of ``device``'s events; it replaces any earlier subscriber of the device."""
        send, receive = trio.open_memory_channel[DcEvent](64)
        await self._control_send.send(HubSubscribe(device, send))
        return receive

    def unsubscribe(self, device: str, events: trio.MemoryReceiveChannel[DcEvent]) -> None:
        """Stop ``events`` (from ``subscribe``); never blocks (a full control queue only delays
        the clean-up: the hub drops a subscriber whose channel is closed when it posts)."""
        events.close()
        with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError):
            self._control_send.send_nowait(HubUnsubscribe(device))

    # --- the hub's own task ------------------------------------------------------------------

    def control(self, msg: HubControl) -> None:
        match msg:
            case HubSubscribe(device=device, events=send):
                self._subs[device] = send
            case HubUnsubscribe(device=device):
                current = self._subs.get(device)
                if current is not None and _closed(current):  # not a newer subscriber's
                    del self._subs[device]

    def _post(self, device: str, event: DcEvent) -> None:
        send = self._subs.get(device)
        if send is None:
            return
        try:
            send.send_nowait(event)
        except trio.WouldBlock:
            pass  # a full backlog already means "refetch", which is what any notice asks for
        except trio.BrokenResourceError:
            del self._subs[device]  # its connection is gone

    def dispatch(self, msg: KernelNotice) -> None:
        match msg:
            case Uevent(action="remove"):
                self._post(msg.device, ConnectionLostEvent(f"kernel removed {msg.device}"))
            case Uevent() if msg.aen == AEN_DLP_CHANGED:
                self._post(msg.device, LogPagesChangedEvent())
            case Uevent() if msg.nvme_event == "rediscover":  # the DC forgot us: register again
                self._post(msg.device, ReconnectedEvent())  # (TP8010)
            case KernelResync(controllers=controllers):
                present = {c.device for c in controllers}
                for device in list(self._subs):
                    if device in present:
                        self._post(device, LogPagesChangedEvent())  # events may have been lost
                    else:
                        self._post(device, ConnectionLostEvent(f"{device} is gone (resync)"))

    async def run(self, receive: trio.MemoryReceiveChannel[KernelNotice]) -> None:
        """Route the uevent monitor's messages (``receive``) and take (un)subscriptions."""

        async def controls() -> None:
            async for msg in self._control:
                self.control(msg)

        async def events() -> None:
            async for msg in receive:
                self.dispatch(msg)

        await wait_any(controls, events)  # ends with the monitor's channel


def _closed(send: trio.MemorySendChannel[DcEvent]) -> bool:
    """True once the subscriber closed its receiving end."""
    return send.statistics().open_receive_channels == 0


class KernelDcConnection:
    """One kernel discovery controller, registered (DIM) under one identity for its lifetime."""

    def __init__(
        self,
        ctrl: KernelController,
        events: trio.MemoryReceiveChannel[DcEvent],
        *,
        pleo: bool,
        identity: HostIdentity | None = None,
    ) -> None:
        self._ctrl = ctrl
        self._events = events
        self._pleo = pleo  # ask a DDC for port-local entries when it says it can (TP8010)
        self._lsp: int | None = None
        self._identity = identity  # registers, re-registers and deregisters under it
        self._reregister = False  # a kernel ``rediscover``: the DC forgot our registration
        self.registered = False

    @property
    def device(self) -> str:
        return self._ctrl.device

    @property
    def cntrltype(self) -> str:
        return self._ctrl.cntrltype

    @property
    def dctype(self) -> str:
        return self._ctrl.dctype or "none"

    def events(self) -> AsyncIterator[DcEvent]:
        return self

    def __aiter__(self) -> AsyncIterator[DcEvent]:
        return self

    async def __anext__(self) -> DcEvent:
        """The hub's next event for the device; a reconnect is noted for the next fetch."""
        event = await self._events.__anext__()
        if isinstance(event, ReconnectedEvent):
            self._reregister = True
        return event

    async def _admin(
        self, sqe: cmd.Sqe, *, name: str, read_len: int = 0, data: bytes = b""
    ) -> bytes:
        try:
            _dw0, out = await trio.to_thread.run_sync(
                lambda: admin_command(self.device, sqe, name=name, read_len=read_len, data=data)
            )
        except OSError as exc:
            raise DiscoveryError(f"{self.device}: {name}: {exc.strerror or exc}") from exc
        return out

    async def _discovery_lsp(self) -> int:
        """LSP for LID 70h: PLEO when enabled, the DC is a DDC and it advertises PLEOS."""
        if self._lsp is None:
            self._lsp = 0
            if self._pleo and self.dctype == "ddc":
                sqe = cmd.get_log_page(cmd.LogPageId.SUPPORTED_LOG_PAGES, offset=0, length=1024)
                try:
                    raw = await self._admin(sqe, name="Get Log Page (supported)", read_len=1024)
                except NvmeStatusError:
                    raw = b""
                dword = decode_supported_log_pages(raw.ljust(1024, b"\0")).get(0x70, 0)
                if DiscoveryLogSupport.from_dword(dword).pleos:
                    self._lsp = cmd.LSP_PLEO
        return self._lsp

    async def get_log_page(self) -> DiscoveryLogPage:
        if self._reregister:
            self._reregister = False
            try:
                await self.register(cmd.DimTas.REGISTER)
            except (NvmeStatusError, DiscoveryError) as exc:
                log.warning("%s: DIM registration after reconnect failed: %s", self.device, exc)
        lsp = await self._discovery_lsp()

        async def read(offset: int, length: int, rae: bool) -> bytes:
            sqe = cmd.get_log_page(
                cmd.LogPageId.DISCOVERY, offset=offset, length=length, rae=rae, lsp=lsp
            )
            return await self._admin(sqe, name="Get Log Page", read_len=length)

        return await read_consistent_log(
            read, where=self.device, chunk=CHUNK, extended=False, limits=Limits(), max_retries=6
        )

    async def register(self, tas: cmd.DimTas) -> None:
        identity = self._identity
        if identity is None or self.dctype not in ("ddc", "cdc"):
            return
        # as before: IPv4 only for an IPv4 literal (a kernel tcp/rdma traddr is always one)
        family = AdrFam.IPV4 if net.ip_version(self._ctrl.traddr) == 4 else AdrFam.IPV6
        data = host_registration(
            hostnqn=identity.hostnqn,
            hostid=identity.hostid,
            hostname=identity.hostname,
            os_version=identity.os_version,
            symname=identity.symname,
            adrfam=family,
        ).encode()
        await self._admin(cmd.dim(tas, data_length=len(data)), name="DIM", data=data)
        self.registered = tas != cmd.DimTas.DEREGISTER


class KernelBackend:
    """``DcBackend`` over the kernel; persistent connections stay when stafd stops.

    ``identity`` is only the default for connections opened without one: a DC actor passes
    the identity it was started with, so a reload cannot change it under a connection.
    """

    def __init__(
        self, kernel: Kernel, identity: HostIdentity, hub: UeventHub, *, pleo: bool = True
    ) -> None:
        self.pleo_default = pleo
        self.kernel = kernel
        self.identity = identity
        self.hub = hub

    def request(
        self, tid: Tid, params: Mapping[str, str], identity: HostIdentity | None = None
    ) -> ConnectRequest:
        """The kernel connect for ``tid``: [Global] + controller= options (``params``).

        Raises InvalidOption (named field) for a value the kernel would refuse.
        """
        host = identity or self.identity
        hostid = str(uuid.UUID(bytes=host.hostid))
        where = str(tid)
        return ConnectRequest(
            transport=tid.transport,
            traddr=tid.traddr,
            trsvcid=tid.trsvcid,
            subsysnqn=tid.subsysnqn,
            hostnqn=tid.host_nqn or host.hostnqn,
            hostid=hostid,
            host_traddr=tid.host_traddr,
            host_iface=tid.host_iface,
            kato=kato_ms_from(params, where) // 1000,
            queue_size=int_from(params, "queue-size", where),
            reconnect_delay=int_from(params, "reconnect-delay", where),
            ctrl_loss_tmo=int_from(params, "ctrl-loss-tmo", where),
            discovery=True,
            hdr_digest=flag_from(params, "hdr-digest"),
            data_digest=flag_from(params, "data-digest"),
            disable_sqflow=flag_from(params, "disable-sqflow"),
            # a controller's own secret, else sys.conf's host key (DcSettings.connection)
            dhchap_secret=params.get("dhchap-secret") or None,
            dhchap_ctrl_secret=params.get("dhchap-ctrl-secret") or None,
            **tls_fields(params, tid.transport),  # type: ignore[arg-type]
        )

    async def _open(
        self, tid: Tid, params: Mapping[str, str], identity: HostIdentity | None = None
    ) -> KernelController:
        existing = [c for c in await self.kernel.list_controllers() if c.is_discovery_controller]
        same = (tid.transport, tid.traddr, tid.trsvcid, tid.subsysnqn)
        found = next(
            (c for c in existing if (c.transport, c.traddr, c.trsvcid, c.subsysnqn) == same), None
        )
        if found is not None:
            log.info("%s: adopting existing discovery controller %s", tid, found.device)
            return found
        try:
            return await self.kernel.connect(self.request(tid, params, identity))
        except (KernelError, InvalidOption) as exc:
            raise DiscoveryError(str(exc)) from exc

    @asynccontextmanager
    async def connect(
        self,
        tid: Tid,
        params: Mapping[str, str],
        *,
        persistent: bool,
        identity: HostIdentity | None = None,
    ) -> AsyncIterator[KernelDcConnection]:
        host = identity or self.identity  # read once: the same for the connection's lifetime
        if tid.host_nqn and tid.host_nqn != host.hostnqn:  # the NQN the kernel connects with
            host = attrs.evolve(host, hostnqn=tid.host_nqn)
        ctrl = await self._open(tid, params, host)
        pleo = pleo_from(params, self.pleo_default)
        events = await self.hub.subscribe(ctrl.device)
        conn = KernelDcConnection(ctrl, events, pleo=pleo, identity=host)
        try:
            try:
                await conn.register(cmd.DimTas.REGISTER)
            except (NvmeStatusError, DiscoveryError) as exc:
                log.warning("%s: DIM registration failed: %s", tid, exc)
            yield conn
        finally:
            self.hub.unsubscribe(ctrl.device, events)
            if not persistent:
                with trio.CancelScope(shield=True), trio.move_on_after(10):
                    try:
                        await conn.register(cmd.DimTas.DEREGISTER)
                        await self.kernel.disconnect(ctrl.device)
                    except (KernelError, NvmeStatusError, DiscoveryError) as exc:
                        log.info("%s: disconnect: %s", tid, exc)
