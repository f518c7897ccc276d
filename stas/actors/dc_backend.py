"""How a DC actor reaches its discovery controller: the backend interface and the userspace one.

The DC actor (``stas.actors.dc``) owns the timers and the state machine; a backend only
knows how to open one connection, read the log page and report what happens to the link.
The same actor therefore drives a userspace NVMe/TCP session (``UserspaceBackend``, here)
or a kernel discovery controller through libnvme (a later backend) without change.

Device names: a kernel backend reports the kernel's ``nvmeN``. A userspace connection has no
kernel device, so its ``device`` is upstream's ``nvme?`` (what upstream's tools and scripts
expect for "no kernel device"), and the detail goes to ``link``: ``userspace tcp <local> ->
<peer>``, which lets an admin match it with ``ss -tn`` output.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import TYPE_CHECKING, Protocol

import attrs
import trio

from stas.constants import WELL_KNOWN_DISC_NQN, default_trsvcid
from stas.messages import Tid
from stas.nvme.errors import DiscoveryError, NvmeStatusError, ProtocolError
from stas.tls_policy import userspace_refusal

if TYPE_CHECKING:
    # The userspace host's codecs and session (commands, PDUs, sockets) are imported when a DC
    # is first reached that way: a kernel-backend stafd never loads them.
    from stas.nvme.host_ops import SessionOptions
    from stas.nvme.hostid import HostIdentity
    from stas.nvme.logpage import DiscoveryLogPage
    from stas.nvme.session import DiscoverySession

log = logging.getLogger(__name__)

DEFAULT_KATO_S = 30  # upstream's discovery controller default (seconds)
MAX_KATO_S = 0xFFFFFFFF // 1000
EVENT_BUFFER = 16
NO_KERNEL_DEVICE = "nvme?"  # upstream's device for a controller without a kernel device


# --- events a connection reports ---------------------------------------------------------------


@attrs.frozen
class LogPagesChangedEvent:
    """The DC said its discovery log changed (AEN 0x70F002): read the log page again."""


@attrs.frozen
class ReconnectedEvent:
    """The link was re-established underneath us (kernel ``rediscover``): resync."""


@attrs.frozen
class ConnectionLostEvent:
    """The connection is gone for good; the actor must reconnect through its own ladder."""

    reason: str


DcEvent = LogPagesChangedEvent | ReconnectedEvent | ConnectionLostEvent


# --- the interface ---------------------------------------------------------------------------


class DcConnection(Protocol):
    """One open connection to a discovery controller, valid inside ``DcBackend.connect``."""

    @property
    def device(self) -> str: ...

    @property
    def cntrltype(self) -> str: ...

    @property
    def dctype(self) -> str: ...  # 'ddc', 'cdc' or 'none' (sysfs words)

    @property
    def registered(self) -> bool: ...

    async def get_log_page(self) -> DiscoveryLogPage:
        """Read the whole discovery log page, consistently (GENCTR checked)."""
        ...

    def events(self) -> AsyncIterator[DcEvent]:
        """What happens to the connection; ends (or says ConnectionLostEvent) when it dies."""
        ...


class DcBackend(Protocol):
    """Opens connections; errors are DiscoveryError subclasses or NvmeStatusError."""

    def connect(
        self,
        tid: Tid,
        params: Mapping[str, str],
        *,
        persistent: bool,
        identity: HostIdentity | None = None,
    ) -> AbstractAsyncContextManager[DcConnection]:
        """Connect to ``tid`` as ``identity`` (None: the backend's); leaving the block
        disconnects (DIM deregister under the same identity, shutdown)."""
        ...


# --- userspace backend -----------------------------------------------------------------------


def kato_ms_from(params: Mapping[str, str], where: str) -> int:
    """The ``kato`` parameter (seconds) in milliseconds; a bad value falls back to 30 s."""
    raw = params.get("kato", "").strip()
    if not raw:
        return DEFAULT_KATO_S * 1000
    try:
        seconds = int(raw)
        if not 0 <= seconds <= MAX_KATO_S:
            raise ValueError
    except ValueError:
        log.warning(
            "%s: kato=%r is not a number of seconds (0..%d); using %d",
            where,
            raw,
            MAX_KATO_S,
            DEFAULT_KATO_S,
        )
        return DEFAULT_KATO_S * 1000
    return seconds * 1000


def int_from(params: Mapping[str, str], key: str, where: str) -> int | None:
    """An integer controller parameter; absent or not a number (warned) means "not set"."""
    raw = params.get(key, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        log.warning("%s: %s=%r is not a number; not used", where, key, raw)
        return None


def flag_from(params: Mapping[str, str], key: str) -> bool:
    """A boolean controller parameter (``true``/``false``, as stafd.conf writes them)."""
    return params.get(key, "").strip().lower() == "true"


def pleo_from(params: Mapping[str, str], default: bool) -> bool:
    """Upstream's ``pleo=enabled|disabled`` (also true/false); unknown words keep the default."""
    raw = params.get("pleo", "").strip().lower()
    if raw in ("enabled", "true", "yes", "on", "1"):
        return True
    if raw in ("disabled", "false", "no", "off", "0"):
        return False
    return default


class UserspaceConnection:
    """A ``DiscoverySession`` seen through the ``DcConnection`` interface."""

    def __init__(self, session: DiscoverySession, *, pleo: bool) -> None:
        self._session = session
        self._pleo = pleo
        from stas.nvme.host_ops import format_address

        self._send, self._recv = trio.open_memory_channel[DcEvent](EVENT_BUFFER)
        local = format_address(*session.local_address)
        peer = format_address(*session.peer_address)
        self._link = f"userspace tcp {local} -> {peer}"

    @property
    def device(self) -> str:
        return NO_KERNEL_DEVICE

    @property
    def link(self) -> str:
        return self._link

    @property
    def alive(self) -> bool:
        return self._session.alive

    @property
    def cntrltype(self) -> str:
        return self._session.identify.cntrltype_label

    @property
    def dctype(self) -> str:
        return self._session.identify.dctype_label

    @property
    def registered(self) -> bool:
        return self._session.registered

    @property
    def lsp(self) -> int:
        """PLEO when pleo is enabled and a DDC advertises PLEOS, as upstream does; else 0.

        A CDC's log is already zoned for this host, so it is never asked for port-local entries.
        """
        from stas.nvme.commands import LSP_PLEO
        from stas.nvme.identify import DcType

        supported = self._session.supported
        if self._pleo and self._session.identify.dctype == DcType.DDC and supported is not None:
            return LSP_PLEO if supported.pleos else 0
        return 0

    async def get_log_page(self) -> DiscoveryLogPage:
        return await self._session.get_log_page(lsp=self.lsp)

    def events(self) -> trio.MemoryReceiveChannel[DcEvent]:
        return self._recv

    async def pump(self) -> None:
        """Turn the session's AENs and its death into DcEvents (runs for the connection)."""
        async with self._send:
            reason = "event stream ended"
            try:
                async for aen in self._session.aens():
                    if aen.is_discovery_log_change:
                        await self._send.send(LogPagesChangedEvent())
                    else:
                        log.info("ignoring asynchronous event %s", aen.describe())
            except (DiscoveryError, ProtocolError, NvmeStatusError) as exc:
                reason = str(exc)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return  # nobody listens any more
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self._send.send(ConnectionLostEvent(reason))


def _default_session_options() -> SessionOptions:
    from stas.nvme.host_ops import SessionOptions

    return SessionOptions()


@attrs.frozen
class UserspaceBackend:
    """Discovery controllers over the userspace NVMe/TCP host (no kernel modules needed)."""

    host: HostIdentity
    options: SessionOptions = attrs.field(factory=_default_session_options)

    def options_for(
        self, params: Mapping[str, str], *, persistent: bool, where: str
    ) -> SessionOptions:
        """Session options for one controller: the defaults refined by its parameters."""
        return attrs.evolve(
            self.options,
            persistent=persistent,
            kato_ms=kato_ms_from(params, where),
            hdgst=flag_from(params, "hdr-digest"),
            ddgst=flag_from(params, "data-digest"),
            disable_sqflow=flag_from(params, "disable-sqflow"),
            pleo=pleo_from(params, True),
            # The DC's own secrets, else sys.conf's host key (connection_params put it there).
            dhchap_secret=params.get("dhchap-secret") or None,
            dhchap_ctrl_secret=params.get("dhchap-ctrl-secret") or None,
        )

    def host_for(self, tid: Tid, identity: HostIdentity | None = None) -> HostIdentity:
        """A per-controller host NQN overrides the identity's (the host ID is kept)."""
        host = identity or self.host
        return attrs.evolve(host, hostnqn=tid.host_nqn) if tid.host_nqn else host

    def connect(
        self,
        tid: Tid,
        params: Mapping[str, str],
        *,
        persistent: bool,
        identity: HostIdentity | None = None,
    ) -> AbstractAsyncContextManager[DcConnection]:
        return self._connect(tid, params, persistent=persistent, identity=identity)

    @asynccontextmanager
    async def _connect(
        self,
        tid: Tid,
        params: Mapping[str, str],
        *,
        persistent: bool,
        identity: HostIdentity | None,
    ) -> AsyncIterator[DcConnection]:
        if tid.transport not in ("tcp", ""):
            raise DiscoveryError(
                f"transport {tid.transport!r} is not supported by the userspace host (tcp only)"
            )
        if refusal := userspace_refusal(params):  # TLS-PSK: not in Python 3.11's ssl
            raise DiscoveryError(f"{tid}: {refusal}")
        options = self.options_for(params, persistent=persistent, where=str(tid))
        raised: BaseException | None = None
        from stas.nvme.session import DiscoverySession

        async with DiscoverySession.open(
            tid.traddr,
            tid.trsvcid or default_trsvcid("tcp"),  # the userspace host is tcp only
            subsysnqn=tid.subsysnqn or WELL_KNOWN_DISC_NQN,
            host=self.host_for(tid, identity),
            options=options,
            host_traddr=tid.host_traddr or None,
            host_iface=tid.host_iface or None,
        ) as session:
            conn = UserspaceConnection(session, pleo=options.pleo)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.pump)
                # Carried out of the nursery by hand so the caller sees its own exception
                # (or Cancelled), not an ExceptionGroup around it.
                try:
                    yield conn
                except BaseException as exc:
                    raised = exc
                finally:
                    nursery.cancel_scope.cancel()
            if raised is not None:
                raise raised
