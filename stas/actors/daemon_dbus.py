"""What stafd's and stacd's D-Bus actors share: the .debug interface (tron, log_level,
process_info), secret redaction for non-root callers, TID lookup, and building the server."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, TypeVar

from stas.dbus.binding import CallContext, PropertyImpl
from stas.dbus.idl import Service
from stas.dbus.redact import redact_secrets
from stas.dbus.service import DBusObjectServer, bind_service
from stas.messages import Tid

log = logging.getLogger("stas.dbus")
DEFAULT_TRSVCID = {"tcp": "8009", "rdma": "4420"}


class TronControl(Protocol):
    """Run-time trace switch (the ``tron`` property, ``stafctl|stacctl tron|troff``)."""

    def get(self) -> bool: ...

    def set(self, value: bool) -> None: ...

    def level_name(self) -> str: ...


class HasTid(Protocol):
    tid: Tid


T = TypeVar("T", bound=HasTid)


def find_by_tid(items: Iterable[T], args: tuple[str, ...]) -> T | None:
    """The item named by upstream's 7 strings; '' trsvcid and host_nqn take their defaults."""
    transport, traddr, trsvcid, subsysnqn, host_traddr, host_iface, host_nqn = args
    trsvcid = trsvcid or DEFAULT_TRSVCID.get(transport, "")
    wanted = (transport, traddr, trsvcid, subsysnqn, host_traddr, host_iface)
    for item in items:
        t = item.tid
        same = (t.transport, t.traddr, t.trsvcid, t.subsysnqn, t.host_traddr, t.host_iface)
        if same == wanted and host_nqn in ("", t.host_nqn):
            return item
    return None


class DaemonDBus:
    """Base of the daemons' handler sets; subclasses add their interface's methods."""

    service: Service

    def __init__(
        self, snapshot: Any, info: Callable[[], Mapping[str, Any]], tron: TronControl
    ) -> None:
        self.snapshot = snapshot  # a trio_util.AsyncValue of the daemon's published state
        self.info = info
        self.tron = tron

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
        )
