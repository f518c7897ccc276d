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

from stas.actors.daemon_dbus import (
    RECONNECT,
    Backoff,
    DaemonDBus,
    TronControl,
    find_by_tid,
    serve_on_bus,
)
from stas.dbus.binding import CallContext
from stas.dbus.idl import STACD
from stas.messages import IocStatus, StacdSnapshot

log = logging.getLogger("stas.dbus.stacd")


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
    return find_by_tid(snapshot.iocs, args)


class StacdDBus(DaemonDBus):
    service = STACD

    snapshot: AsyncValue[StacdSnapshot]

    async def list_controllers(self, ctx: CallContext, detailed: bool) -> tuple[Any, ...]:
        iocs = [ioc_dict(i, detailed=detailed) for i in self.snapshot.value.iocs]
        return (await self.shown(ctx, iocs),)

    async def controller_info(self, ctx: CallContext, *tid: str) -> tuple[Any, ...]:
        ioc = find_ioc(self.snapshot.value, tid)
        if ioc is None:
            return ("{}",)
        return (json.dumps(await self.shown(ctx, ioc_dict(ioc, detailed=True))),)

    def methods(self) -> dict[str, Any]:
        return super().methods() | {
            "list_controllers": self.list_controllers,
            "controller_info": self.controller_info,
        }


async def run_stacd_dbus(
    *,
    snapshot: AsyncValue[StacdSnapshot],
    info: Callable[[], Mapping[str, Any]],
    tron: TronControl,
    address: str | None = None,
    uid_lookup: Any = None,
    backoff: Backoff = RECONNECT,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``started`` fires once the bus name is ours; a lost bus is
    reconnected with backoff (``serve_on_bus``)."""
    server = StacdDBus(snapshot, info, tron).server(address, uid_lookup)
    await serve_on_bus(server, backoff=backoff, task_status=task_status)
