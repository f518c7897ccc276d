"""stacd's D-Bus actor: upstream's org.nvmexpress.stac API served from the connector's snapshots.

Same rules as stafd's: methods read the latest immutable snapshot, and callers that are not
root never see DH-HMAC-CHAP secrets or the host key.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import trio
from trio_util import AsyncValue

from stas.actors.stafd_dbus import TronControl
from stas.dbus.binding import CallContext, PropertyImpl
from stas.dbus.idl import STACD
from stas.dbus.redact import redact_secrets
from stas.dbus.service import DBusObjectServer, bind_service
from stas.messages import IocStatus, StacdSnapshot

log = logging.getLogger("stas.dbus.stacd")
DEFAULT_TRSVCID = {"tcp": "8009", "rdma": "4420"}


def ioc_dict(ioc: IocStatus, *, detailed: bool) -> dict[str, str]:
    """Upstream's controller dict: TID keys, per-controller config keys, device (+ details)."""
    out = ioc.tid.as_dict()
    out.update({k: str(v) for k, v in ioc.params.items()})
    out["device"] = ioc.device
    if detailed:
        out.update(
            {
                "origin": ioc.origin,
                "connected": str(ioc.connected),
                "adopted": str(ioc.adopted),
                "state": ioc.state,
                "connect attempts": str(ioc.connect_attempts),
                "last error": ioc.last_error,
                "dlpe.eflags.ncc": str(ioc.ncc),
            }
        )
    return out


def find_ioc(snapshot: StacdSnapshot, args: tuple[str, ...]) -> IocStatus | None:
    transport, traddr, trsvcid, subsysnqn, host_traddr, host_iface, host_nqn = args
    trsvcid = trsvcid or DEFAULT_TRSVCID.get(transport, "")
    for ioc in snapshot.iocs:
        t = ioc.tid
        same = (t.transport, t.traddr, t.trsvcid, t.subsysnqn, t.host_traddr, t.host_iface)
        if same == (transport, traddr, trsvcid, subsysnqn, host_traddr, host_iface) and (
            host_nqn in ("", t.host_nqn)
        ):
            return ioc
    return None


class StacdDBus:
    def __init__(
        self,
        snapshot: AsyncValue[StacdSnapshot],
        info: Callable[[], Mapping[str, Any]],
        tron: TronControl,
    ) -> None:
        self.snapshot = snapshot
        self.info = info
        self.tron = tron

    async def _shown(self, ctx: CallContext, value: Any) -> Any:
        root = await ctx.caller_is_root()
        if isinstance(value, list):
            return [redact_secrets(v, caller_is_root=root) for v in value]
        return redact_secrets(value, caller_is_root=root)

    async def list_controllers(self, ctx: CallContext, detailed: bool) -> tuple[Any, ...]:
        iocs = [ioc_dict(i, detailed=detailed) for i in self.snapshot.value.iocs]
        return (await self._shown(ctx, iocs),)

    async def process_info(self, ctx: CallContext) -> tuple[Any, ...]:
        return (json.dumps(await self._shown(ctx, dict(self.info())), default=str),)

    async def controller_info(self, ctx: CallContext, *tid: str) -> tuple[Any, ...]:
        ioc = find_ioc(self.snapshot.value, tid)
        if ioc is None:
            return ("{}",)
        return (json.dumps(await self._shown(ctx, ioc_dict(ioc, detailed=True))),)

    async def get_tron(self, ctx: CallContext) -> bool:
        return self.tron.get()

    async def set_tron(self, ctx: CallContext, value: bool) -> None:
        self.tron.set(bool(value))
        log.info("tron set to %s over D-Bus", bool(value))

    async def get_log_level(self, ctx: CallContext) -> str:
        return self.tron.level_name()

    def server(self, address: str | None = None, uid_lookup: Any = None) -> DBusObjectServer:
        methods = {
            "list_controllers": self.list_controllers,
            "process_info": self.process_info,
            "controller_info": self.controller_info,
        }
        properties = {
            "tron": PropertyImpl(self.get_tron, self.set_tron),
            "log_level": PropertyImpl(self.get_log_level),
        }
        return DBusObjectServer(
            STACD.bus_name,
            STACD.object_path,
            bind_service(STACD, methods, properties),
            address=address,
            uid_lookup=uid_lookup,
        )


async def run_stacd_dbus(
    *,
    snapshot: AsyncValue[StacdSnapshot],
    info: Callable[[], Mapping[str, Any]],
    tron: TronControl,
    address: str | None = None,
    uid_lookup: Any = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``started`` fires once the bus name is ours."""
    server = StacdDBus(snapshot, info, tron).server(address, uid_lookup)
    await server.run(task_status=task_status)
