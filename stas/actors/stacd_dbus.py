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
    announce_tron_changes,
    find_by_tid,
    serve_on_bus,
    sysfs_keys,
    timer_text,
)
from stas.actors.ioc import IocSettings
from stas.dbus.binding import CallContext
from stas.dbus.idl import STACD
from stas.messages import IocStatus, StacdSnapshot

log = logging.getLogger("stas.dbus.stacd")


RETRY_PERIOD = IocSettings().backoff_max  # the longest wait between connection attempts


def ioc_dict(
    ioc: IocStatus, *, detailed: bool, kernel: Any = None, hostid: str = ""
) -> dict[str, str]:
    """Upstream's controller dict: TID keys, per-controller config keys, device (+ details).

    ``dlpe`` is upstream's str() of the log page entry, here the one the snapshot carries
    (if any); ``kernel`` and ``hostid`` as for stafd's ``dc_dict``.
    """
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
                "retry connect timer": timer_text(RETRY_PERIOD, ioc.state == "backoff"),
                "last error": ioc.last_error,
                "dlpe": str(dict(getattr(ioc, "dlpe", None) or {})),
                "dlpe.eflags.ncc": str(ioc.ncc),
                **sysfs_keys(kernel, ioc.tid.host_nqn, hostid),
            }
        )
    return out


def find_ioc(snapshot: StacdSnapshot, args: tuple[str, ...]) -> IocStatus | None:
    return find_by_tid(snapshot.iocs, args)


class StacdDBus(DaemonDBus):
    service = STACD

    snapshot: AsyncValue[StacdSnapshot]

    async def ioc_dicts(self, iocs: tuple[IocStatus, ...], detailed: bool) -> list[dict[str, str]]:
        if not detailed:
            return [ioc_dict(i, detailed=False) for i in iocs]
        kernel = await self.kernel_devices(i.device for i in iocs)
        hostid = str(self.info().get("hostid", ""))
        return [
            ioc_dict(i, detailed=True, kernel=kernel.get(i.device), hostid=hostid) for i in iocs
        ]

    async def list_controllers(self, ctx: CallContext, detailed: bool) -> tuple[Any, ...]:
        iocs = await self.ioc_dicts(self.snapshot.value.iocs, detailed)
        return (await self.shown(ctx, iocs),)

    async def controller_info(self, ctx: CallContext, *tid: str) -> tuple[Any, ...]:
        ioc = find_ioc(self.snapshot.value, tid)
        if ioc is None:
            return ("{}",)
        (shown,) = await self.ioc_dicts((ioc,), True)
        return (json.dumps(await self.shown(ctx, shown)),)

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
    read_sysfs: bool = True,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``started`` fires once the bus name is ours; a lost bus is
    reconnected with backoff (``serve_on_bus``). ``read_sysfs`` False: the devices are not
    the host's (fake kernel), so ``ls -d`` must not read /sys/class/nvme for them."""
    handlers = StacdDBus(snapshot, info, tron)
    handlers.read_sysfs = read_sysfs
    server = handlers.server(address, uid_lookup)

    def on_connected(nursery: trio.Nursery) -> None:
        nursery.start_soon(announce_tron_changes, server, tron, STACD.debug_interface)

    await serve_on_bus(server, on_connected=on_connected, backoff=backoff, task_status=task_status)
