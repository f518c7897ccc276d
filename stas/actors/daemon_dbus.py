"""What stafd's and stacd's D-Bus actors share: the .debug interface (tron, log_level,
process_info), secret redaction for non-root callers, TID lookup, building the server, and
keeping it on the bus (a lost bus connection is reconnected, never the end of the daemon)."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol, TypeVar

import attrs
import trio
from trio_util import AsyncValue

from stas.backoff import doubling
from stas.constants import tid_matches
from stas.dbus.binding import CallContext, PropertyImpl
from stas.dbus.common import DBusError
from stas.dbus.idl import Service
from stas.dbus.redact import redact_secrets
from stas.dbus.service import MAX_REPLY_BYTES, DBusObjectServer, bind_service
from stas.messages import Tid

log = logging.getLogger("stas.dbus")


def read_kernel_device(device: str) -> Any:
    """/sys/class/nvme/<device> (None if absent); tests replace it, having no host sysfs."""
    from stas.kernel.sysfs import read_device  # imported on the first detailed view only

    return read_device(device)


SYSFS_KEYS = ("hostid", "hostnqn", "model", "serial")


def timer_text(period: float, running: bool) -> str:
    """Upstream's timer format, ``'60.0s [off]'``; ``[on]`` stands in for the time left,
    which the published snapshots do not carry."""
    return f"{period:.1f}s [{'on' if running else 'off'}]"


# Upstream soaks config changes 1.5 s and defers controller disposal ("terminator"); here both
# happen at once (bursts coalesced by draining the inbox), so those timers never run.
IDLE_TIMER = timer_text(0.0, False)


@functools.cache
def kernel_support() -> dict[str, str]:
    """Upstream's ``kernel support.*`` keys, from /dev/nvme-fabrics' option list (read once)."""
    from stas.kernel.fabrics import read_capabilities

    caps = read_capabilities()
    return {
        "kernel support.TP8013": str("discovery" in caps),
        "kernel support.host_iface": str("host_iface" in caps),
    }


def upstream_status_keys() -> dict[str, str]:
    """process_info keys both daemons share with upstream: ``config soak timer``, kernel support."""
    return {"config soak timer": IDLE_TIMER, **kernel_support()}


def sysfs_keys(kernel: Any, host_nqn: str, hostid: str) -> dict[str, str]:
    """Upstream's sysfs keys of a controller; without a kernel device (userspace backend, not
    connected) the host identity it connects with, and '' for model and serial."""
    values = {k: str(getattr(kernel, k, "") or "") for k in SYSFS_KEYS}
    values["hostnqn"] = values["hostnqn"] or host_nqn
    values["hostid"] = values["hostid"] or hostid
    return values


class TronControl(Protocol):
    """Run-time trace switch (the ``tron`` property, ``stafctl|stacctl tron|troff``)."""

    def get(self) -> bool: ...

    def set(self, value: bool) -> None: ...

    def level_name(self) -> str: ...


class WatchedTron:
    """A trace switch whose changes can be awaited, whatever makes them (config reload, D-Bus
    Set), so the D-Bus actor announces each with PropertiesChanged as GDBus objects do."""

    def __init__(self, inner: TronControl) -> None:
        self._inner = inner
        self.changes = AsyncValue(inner.get())

    def get(self) -> bool:
        return self._inner.get()

    def set(self, value: bool) -> None:
        self._inner.set(value)
        self.changes.value = self._inner.get()

    def level_name(self) -> str:
        return self._inner.level_name()


async def announce_tron_changes(server: DBusObjectServer, tron: TronControl, iface: str) -> None:
    """Announce every change of a ``WatchedTron`` on ``iface`` (tron and log_level) until
    cancelled; a plain TronControl is only announced when set over D-Bus."""
    if not isinstance(tron, WatchedTron):
        return
    async for _ in tron.changes.eventual_values():
        await server.announce_properties(iface)


class HasTid(Protocol):
    @property
    def tid(self) -> Tid: ...  # read-only: the statuses are frozen


T = TypeVar("T", bound=HasTid)


def find_by_tid(items: Iterable[T], args: tuple[str, ...]) -> T | None:
    """The item named by upstream's 7 strings (``tid_matches``: '' trsvcid and host_nqn take
    their defaults)."""
    return next((item for item in items if tid_matches(item.tid.dbus_args(), args)), None)


class DaemonDBus:
    """Base of the daemons' handler sets; subclasses add their interface's methods."""

    service: Service
    reply_budget: int = MAX_REPLY_BYTES  # the server refuses larger replies; handlers may too

    def __init__(
        self, snapshot: Any, info: Callable[[], Mapping[str, Any]], tron: TronControl
    ) -> None:
        self.snapshot = snapshot  # a trio_util.AsyncValue of the daemon's published state
        self.info = info
        self.tron = tron
        self.read_sysfs = True  # False when the daemon's devices are not the host's (fake kernel)

    async def kernel_devices(self, devices: Iterable[str]) -> dict[str, Any]:
        """sysfs attributes of the real ``nvmeN`` devices among ``devices``, read in a thread."""
        if not self.read_sysfs:
            return {}
        from stas.kernel.sysfs import is_device_name

        names = sorted({d for d in devices if is_device_name(d)})
        if not names:
            return {}
        return await trio.to_thread.run_sync(lambda: {d: read_kernel_device(d) for d in names})

    async def shown(self, ctx: CallContext, value: Any) -> Any:
        """``value`` as this caller may see it: secrets only for root."""
        root = await ctx.caller_is_root()
        if isinstance(value, list):
            return [redact_secrets(v, caller_is_root=root) for v in value]
        return redact_secrets(value, caller_is_root=root)

    async def process_info(self, ctx: CallContext) -> tuple[Any, ...]:
        return (json.dumps(await self.shown(ctx, dict(self.info())), default=str),)

    async def get_tron(self, ctx: CallContext) -> bool:
        return self.tron.get()

    async def set_tron(self, ctx: CallContext, value: bool) -> None:
        self.tron.set(bool(value))
        log.info("tron set to %s over D-Bus", bool(value))

    async def get_log_level(self, ctx: CallContext) -> str:
        return self.tron.level_name()

    def methods(self) -> dict[str, Any]:
        return {"process_info": self.process_info}

    def server(self, address: str | None = None, uid_lookup: Any = None) -> DBusObjectServer:
        properties = {
            "tron": PropertyImpl(self.get_tron, self.set_tron),
            "log_level": PropertyImpl(self.get_log_level),
        }
        return DBusObjectServer(
            self.service.bus_name,
            self.service.object_path,
            bind_service(self.service, self.methods(), properties),
            address=address,
            uid_lookup=uid_lookup,
            max_reply=self.reply_budget,
        )


@attrs.frozen
class Backoff:
    """Delays between reconnection attempts: doubling from ``initial`` up to ``maximum``."""

    initial: float = 0.5
    maximum: float = 30.0

    def delays(self) -> Iterator[float]:
        return doubling(self.initial, self.maximum)


RECONNECT = Backoff()


def _dbus_failure(exc: BaseException) -> DBusError | None:
    """The D-Bus error that ended a connection, if that is all that went wrong."""
    if isinstance(exc, DBusError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        matched, rest = exc.split(DBusError)
        if rest is None and matched is not None:
            leaf: BaseException = matched
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            return leaf if isinstance(leaf, DBusError) else None
    return None


async def serve_on_bus(
    server: Any,
    *,
    on_connected: Callable[[trio.Nursery], None] | None = None,
    backoff: Backoff = RECONNECT,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``server`` (a DBusObjectServer) forever, reconnecting whenever the bus is lost.

    The first connection's errors propagate: a daemon that cannot own its name must not
    report ready. After that, a lost bus (dbus-daemon restarted, our connection dropped) or a
    refused name is retried with ``backoff`` and logged; each new connection re-requests the
    name and calls ``on_connected`` with a nursery that lives as long as the connection.
    """
    started = False
    delays = backoff.delays()
    failures = 0
    while True:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(server.run)
                if on_connected is not None:
                    on_connected(nursery)
                if not started:
                    started = True
                    task_status.started(server)
                else:
                    log.warning("D-Bus: back on the bus as %s after %d attempt(s)",
                                server.bus_name, failures)  # fmt: skip
                delays, failures = backoff.delays(), 0
        except BaseException as exc:
            failure = _dbus_failure(exc)
            if failure is None:
                raise
            if not started:
                raise failure from None  # plain, as the daemons' start-up reports it
            delay = next(delays)
            if failures == 0:
                log.warning("D-Bus: %s; reconnecting (first attempt in %.1f s)", failure, delay)
            else:
                log.info("D-Bus: still off the bus (%s); next attempt in %.1f s", failure, delay)
            failures += 1
            await trio.sleep(delay)
            continue
        await trio.sleep(backoff.initial)  # ``run`` ended without an error: reconnect calmly
