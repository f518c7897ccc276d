"""stafd's mDNS browser actor: TP8009 ``_nvme-disc._tcp`` (and ``._udp``) announcements -> DCs.

Upstream needed avahi-daemon over D-Bus; here python-zeroconf browses in-process. zeroconf runs
its own asyncio thread and calls our listener from a browser thread; the listener only hands a
"service (type, name) changed" note to Trio with ``TrioToken.run_sync_soon`` (no polling). Notes
are coalesced per service, so a flood of announcements costs memory bounded by the number of
distinct names (itself capped), and a slow finder never blocks zeroconf's thread.

For every resolved service each address becomes a candidate ``Tid`` keyed
``"{iface}|{name}|{address}"``. A candidate is reported with ``MdnsServiceUp`` only once a TCP
connect to it succeeded (``probe``); ``MdnsServiceDown`` follows a goodbye, an expiry, or an
update that changed or withdrew it. Everything sent to the finder comes from the one serving
task, so an Up can never overtake the Down that cancels it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
import trio
from trio_util import AsyncValue, RepeatedEvent
from zeroconf import InterfaceChoice, IPVersion, ServiceBrowser, ServiceListener, Zeroconf

from stas.mdns_txt import (
    Rejected,
    TxtResult,
    parse_txt,
    service_to_candidate,
    split_txt_rdata,
)
from stas.messages import MdnsServiceDown, MdnsServiceUp, Tid
from stas.messages_stafd import MdnsCandidate, MdnsState
from stas.nvme.errors import ProtocolError
from stas.reachability import local_interfaces_for, wait_reachable

log = logging.getLogger("stas.mdns")

# upstream browses both; TP8009 defines _tcp, and _udp costs nothing when nobody answers
DEFAULT_SERVICE_TYPES = ("_nvme-disc._tcp.local.", "_nvme-disc._udp.local.")
MAX_SERVICES = 1024  # distinct service names tracked; a flood beyond this is logged and ignored
MAX_ADDRESSES = 16  # addresses used per service
MAX_LOGGED = 4096  # remembered (name, reason) pairs for log-once; forgotten wholesale past this

Interfaces = InterfaceChoice | list[str]
ProbeFn = Callable[..., Awaitable[None]]


@attrs.frozen
class Resolved:
    """What a resolved announcement says: port, raw TXT RDATA and scoped addresses."""

    stype: str
    name: str
    port: int
    text: bytes
    addresses: tuple[str, ...]


Resolver = Callable[[str, str], Awaitable[Resolved | None]]


@attrs.define(eq=False)
class _Candidate:
    key: str
    service: str
    stype: str
    tid: Tid
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    reported: bool = False


class _Inbox:
    """Notes from zeroconf's thread and from probe tasks, consumed by the serving task."""

    def __init__(self) -> None:
        self.changes: dict[tuple[str, str], bool] = {}  # (stype, name) -> removed
        self.reachable: list[_Candidate] = []
        self._wake = RepeatedEvent()

    def post_change(self, stype: str, name: str, removed: bool) -> None:
        self.changes.pop((stype, name), None)  # re-insert: keep arrival order
        self.changes[(stype, name)] = removed
        self._wake.set()

    def post_reachable(self, cand: _Candidate) -> None:
        self.reachable.append(cand)
        self._wake.set()

    async def wait(self) -> None:
        while not (self.changes or self.reachable):
            await self._wake.wait()


class _Listener(ServiceListener):
    """Runs in zeroconf's browser thread: forwards a note to Trio, never blocks."""

    def __init__(self, token: trio.lowlevel.TrioToken, inbox: _Inbox) -> None:
        self._token = token
        self._inbox = inbox

    def _post(self, stype: str, name: str, removed: bool) -> None:
        with contextlib.suppress(trio.RunFinishedError):  # the actor is gone: zeroconf closes
            self._token.run_sync_soon(self._inbox.post_change, stype, name, removed)

    def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        self._post(type_, name, False)

    def update_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        self._post(type_, name, False)

    def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        self._post(type_, name, True)


def printable(text: str) -> str:
    """A service name as it may appear in keys and logs (no control characters)."""
    return "".join(c if c.isprintable() and c != "\\" else f"\\x{ord(c):02x}" for c in text)


class MdnsBrowser:
    """The actor's state: services, their candidates and probes; drives the finder's channel."""

    def __init__(
        self,
        send: trio.MemorySendChannel[MdnsServiceUp | MdnsServiceDown],
        resolver: Resolver,
        *,
        service_types: Sequence[str] = DEFAULT_SERVICE_TYPES,
        probe: ProbeFn = wait_reachable,
        iface_lookup: Callable[[str], list[str]] = local_interfaces_for,
        kernel_supports_tp8013: bool = True,
        published: AsyncValue[MdnsState] | None = None,
    ) -> None:
        self.inbox = _Inbox()
        # what others may read (D-Bus process_info): an immutable value, replaced on change
        self.published = published or AsyncValue(MdnsState())
        self.published.value = MdnsState(tuple(service_types))
        self.service_types = tuple(service_types)
        self._send = send
        self._resolve = resolver
        self._probe = probe
        self._iface_lookup = iface_lookup
        self._tp8013 = kernel_supports_tp8013
        self._services: dict[str, dict[str, _Candidate]] = {}
        self._logged: set[tuple[str, str]] = set()

    def _log_once(self, level: int, name: str, reason: str) -> None:
        """Log ``mDNS service <name> <reason>`` once per (name, reason)."""
        if (name, reason) in self._logged:
            return
        if len(self._logged) >= MAX_LOGGED:
            self._logged.clear()
        self._logged.add((name, reason))
        log.log(level, "mDNS service %s %s", name, reason)

    async def serve(self) -> None:
        """Consume notes forever; probes run in a nursery that dies with the actor.

        Once stopped, the published value shows no services: nothing browses any more.
        """
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    await self.inbox.wait()
                    while self.inbox.reachable:
                        await self._report(self.inbox.reachable.pop(0))
                    if self.inbox.changes:
                        (stype, name), removed = next(iter(self.inbox.changes.items()))
                        del self.inbox.changes[(stype, name)]
                        resolved = None if removed else await self._resolve(stype, name)
                        if removed or resolved is not None:
                            await self.apply(nursery, stype, name, resolved)
        finally:
            self._services.clear()
            self.published.value = MdnsState(self.service_types)

    async def _report(self, cand: _Candidate) -> None:
        current = self._services.get(cand.service, {}).get(cand.key)
        if current is cand and not cand.reported:
            cand.reported = True
            log.info(
                "mDNS discovery controller %s is reachable (%s)", cand.tid, printable(cand.service)
            )
            self._publish()
            await self._send.send(MdnsServiceUp(cand.key, cand.tid))

    def _candidates(self, res: Resolved) -> dict[str, Tid]:
        name = printable(res.name)
        try:
            txt = parse_txt(split_txt_rdata(res.text))
        except ProtocolError as exc:
            txt = TxtResult(problem=str(exc))
        out: dict[str, Tid] = {}
        for address in res.addresses[:MAX_ADDRESSES]:
            ifaces = self._iface_lookup(address)
            if len(ifaces) > 1:
                self._log_once(
                    logging.ERROR,
                    name,
                    f"has address {address} on several interfaces"
                    f" ({', '.join(ifaces)}); check the network configuration, using {ifaces[0]}",
                )
            iface = ifaces[0] if ifaces else ""
            cand = service_to_candidate(
                txt,
                address=address,
                port=res.port,
                iface=iface,
                kernel_supports_tp8013=self._tp8013,
            )
            if isinstance(cand, Rejected):
                self._log_once(logging.ERROR, name, f"ignored: {cand.reason}")
                continue
            out[f"{iface}|{name}|{cand.traddr}"] = cand
        return out

    async def apply(
        self, nursery: trio.Nursery, stype: str, name: str, resolved: Resolved | None
    ) -> None:
        """Bring one service's candidates in line with ``resolved`` (None: it went away)."""
        old = self._services.get(name, {})
        is_new = name not in self._services and resolved is not None
        if is_new and len(self._services) >= MAX_SERVICES:
            # one line for the whole flood, not one per name
            self._log_once(logging.WARNING, "announcements", f"beyond {MAX_SERVICES} ignored")
            return
        wanted = self._candidates(resolved) if resolved is not None else {}
        for key, cand in list(old.items()):
            if wanted.get(key) != cand.tid:
                del old[key]
                cand.scope.cancel()
                if cand.reported:
                    log.info(
                        "mDNS discovery controller %s withdrawn (%s)", cand.tid, printable(name)
                    )
                    await self._send.send(MdnsServiceDown(key))
        for key, tid in wanted.items():
            if key not in old:
                cand = _Candidate(key=key, service=name, stype=stype, tid=tid)
                old[key] = cand
                nursery.start_soon(self._probe_task, cand, name=f"mdns-probe:{key}")
        if old:
            self._services[name] = old
        else:
            self._services.pop(name, None)
        self._publish()

    async def _probe_task(self, cand: _Candidate) -> None:
        with cand.scope:
            if cand.tid.transport == "tcp":  # upstream gates tcp only: rdma cannot be probed
                await self._probe(cand.tid.traddr, cand.tid.trsvcid, iface=cand.tid.host_iface)
            self.inbox.post_reachable(cand)

    def _publish(self) -> None:
        """Replace the published value when what it shows changed."""
        state = MdnsState(
            self.service_types,
            tuple(
                MdnsCandidate(key, c.tid, c.reported)
                for cands in self._services.values()
                for key, c in sorted(cands.items())
            ),
        )
        if state != self.published.value:
            self.published.value = state

    def snapshot(self) -> dict[str, Any]:
        """The ``avahi``-like section of D-Bus ``process_info``, from the published value."""
        state: MdnsState = self.published.value
        return state.as_info()


def default_zeroconf(interfaces: Interfaces) -> Zeroconf:
    """IPv4 and IPv6 on all interfaces (IPv4 only if IPv6 is unavailable); else autodetect."""
    if interfaces is InterfaceChoice.All:
        try:
            return Zeroconf(interfaces=interfaces, ip_version=IPVersion.All)
        except OSError as exc:
            log.warning("mDNS over IPv6 unavailable (%s); browsing IPv4 only", exc)
            return Zeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
    return Zeroconf(interfaces=interfaces)


def _resolve_blocking(zc: Zeroconf, stype: str, name: str, timeout_ms: int) -> Resolved | None:
    """Runs in a worker thread: ask zeroconf (cache first, then the network)."""
    try:
        info = zc.get_service_info(stype, name, timeout=timeout_ms)
    except Exception as exc:  # hostile names trip zeroconf's own checks; never crash the actor
        log.warning("mDNS service %s could not be resolved: %s", printable(name), exc)
        return None
    if info is None or info.port is None:
        log.debug("mDNS service %s did not resolve in %d ms", printable(name), timeout_ms)
        return None
    return Resolved(stype, name, info.port, info.text or b"", tuple(info.parsed_scoped_addresses()))


async def run_mdns_browser(
    send: trio.MemorySendChannel[MdnsServiceUp | MdnsServiceDown],
    *,
    interfaces: Interfaces = InterfaceChoice.All,
    service_types: Sequence[str] = DEFAULT_SERVICE_TYPES,
    zeroconf_factory: Callable[[Interfaces], Zeroconf] | None = None,
    probe: ProbeFn = wait_reachable,
    iface_lookup: Callable[[str], list[str]] = local_interfaces_for,
    kernel_supports_tp8013: bool = True,
    resolve_timeout: float = 3.0,
    published: AsyncValue[MdnsState] | None = None,
    task_status: trio.TaskStatus[MdnsBrowser] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Browse until cancelled; ``task_status.started`` hands back the browser.

    The browser's state is published in ``published`` (the browser's own ``published`` when
    None): give one AsyncValue to every run of the browser and readers never hold a stale one.
    """
    factory = zeroconf_factory or default_zeroconf
    zc = await trio.to_thread.run_sync(factory, interfaces)
    try:

        async def resolver(stype: str, name: str) -> Resolved | None:
            timeout_ms = int(resolve_timeout * 1000)
            return await trio.to_thread.run_sync(
                _resolve_blocking, zc, stype, name, timeout_ms, abandon_on_cancel=True
            )

        browser = MdnsBrowser(
            send,
            resolver,
            service_types=service_types,
            probe=probe,
            iface_lookup=iface_lookup,
            kernel_supports_tp8013=kernel_supports_tp8013,
            published=published,
        )
        listener = _Listener(trio.lowlevel.current_trio_token(), browser.inbox)
        zb = ServiceBrowser(zc, list(service_types), listener=listener)
        try:
            task_status.started(browser)
            await browser.serve()
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(zb.cancel)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(zc.close)
