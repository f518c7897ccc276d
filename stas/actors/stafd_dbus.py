"""stafd's D-Bus actor: upstream's org.nvmexpress.staf API served from the finder's snapshots.

Methods read the latest immutable snapshot; signals fire on *changes* between snapshots:
``log_pages_changed`` when a DC's log page content changed (upstream: after every fetch, which
made stacd reconcile everything each time), ``dc_removed`` when a DC left. Callers that are not
root never see secrets (host key, DH-HMAC-CHAP secrets); upstream showed them to every user.
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
from stas.actors.dc import DcSettings
from stas.dbus.binding import CallContext, DBusMethodError
from stas.dbus.common import ERR_LIMITS_EXCEEDED
from stas.dbus.idl import STAFD
from stas.dbus.service import DBusObjectServer
from stas.messages import DcStatus, StafdSnapshot, Tid

log = logging.getLogger("stas.dbus.stafd")


RETRY_PERIOD = DcSettings().backoff_max  # the longest wait between connection attempts


def dc_dict(
    dc: DcStatus, *, detailed: bool, kernel: Any = None, hostid: str = ""
) -> dict[str, str]:
    """Upstream's controller dict: TID keys, per-controller config keys, device (+ details).

    ``kernel`` is the DC's sysfs reading (None without a kernel device), ``hostid`` the
    daemon's host ID for when there is none. ``connection`` names the link behind a device
    that is no kernel device (userspace backend: ``nvme?``), '' otherwise.
    """
    out = dc.tid.as_dict()
    out.update({k: str(v) for k, v in dc.params.items()})
    out["device"] = dc.device
    if detailed:
        out.update(
            {
                "origin": dc.origin,
                "connected": str(dc.connected),
                "state": dc.state,
                "connection": dc.link,
                "connect attempts": str(dc.connect_attempts),
                "retry connect timer": timer_text(RETRY_PERIOD, dc.state == "backoff"),
                "last error": dc.last_error,
                "cntrltype": dc.cntrltype,
                "dctype": dc.dctype,
                "registered": str(dc.registered),
                "genctr": "" if dc.genctr is None else str(dc.genctr),
                "log page entries": str(len(dc.log_pages)),
                **sysfs_keys(kernel, dc.tid.host_nqn, hostid),
            }
        )
    return out


def find_dc(snapshot: StafdSnapshot, args: tuple[str, ...]) -> DcStatus | None:
    return find_by_tid(snapshot.dcs, args)


def changes(old: StafdSnapshot, new: StafdSnapshot) -> tuple[list[DcStatus], bool]:
    """DCs whose log page content changed, and whether any DC was removed."""
    before: dict[Tid, DcStatus] = {dc.tid: dc for dc in old.dcs}
    changed = []
    for dc in new.dcs:
        prev = before.get(dc.tid)
        if (prev is None and dc.log_pages) or (prev is not None and prev.log_pages != dc.log_pages):
            changed.append(dc)
    now = {dc.tid for dc in new.dcs}
    return changed, any(t not in now for t in before)


class StafdDBus(DaemonDBus):
    """Handlers for the staf interfaces over a published snapshot."""

    service = STAFD

    snapshot: AsyncValue[StafdSnapshot]

    async def dc_dicts(self, dcs: tuple[DcStatus, ...], detailed: bool) -> list[dict[str, str]]:
        if not detailed:
            return [dc_dict(dc, detailed=False) for dc in dcs]
        kernel = await self.kernel_devices(dc.device for dc in dcs)
        hostid = str(self.info().get("hostid", ""))
        return [
            dc_dict(dc, detailed=True, kernel=kernel.get(dc.device), hostid=hostid) for dc in dcs
        ]

    async def list_controllers(self, ctx: CallContext, detailed: bool) -> tuple[Any, ...]:
        dcs = await self.dc_dicts(self.snapshot.value.dcs, detailed)
        return (await self.shown(ctx, dcs),)

    async def get_log_pages(self, ctx: CallContext, *tid: str) -> tuple[Any, ...]:
        dc = find_dc(self.snapshot.value, tid)
        return (dc.dlpes() if dc else [],)

    async def get_all_log_pages(self, ctx: CallContext, detailed: bool) -> tuple[Any, ...]:
        """Every DC's log pages as one JSON string, refused once it outgrows the reply budget.

        Built DC by DC so an oversized cache is refused before it is all serialised (a reply
        over the bus's limit used to get stafd's connection dropped: issue 13 item 1).
        """
        dcs = self.snapshot.value.dcs
        parts: list[str] = []
        size = 2  # the enclosing brackets
        for n, (dc, shown) in enumerate(zip(dcs, await self.dc_dicts(dcs, detailed), strict=True)):
            item = {"discovery-controller": shown, "log-pages": dc.dlpes()}
            parts.append(json.dumps(await self.shown(ctx, item)))
            size += len(parts[-1]) + 2
            if size > self.reply_budget:
                raise DBusMethodError(
                    ERR_LIMITS_EXCEEDED,
                    f"reply would be over {self.reply_budget} bytes ({size} bytes after"
                    f" {n + 1} of {len(dcs)} discovery controllers); limit {self.reply_budget};"
                    " use get_log_pages per controller (stafctl dlp)",
                )
        return ("[" + ", ".join(parts) + "]",)

    async def controller_info(self, ctx: CallContext, *tid: str) -> tuple[Any, ...]:
        dc = find_dc(self.snapshot.value, tid)
        if dc is None:
            return ("{}",)
        (shown,) = await self.dc_dicts((dc,), True)
        return (json.dumps(await self.shown(ctx, shown)),)

    def methods(self) -> dict[str, Any]:
        return super().methods() | {
            "list_controllers": self.list_controllers,
            "get_log_pages": self.get_log_pages,
            "get_all_log_pages": self.get_all_log_pages,
            "controller_info": self.controller_info,
        }


async def emit_changes(
    server: DBusObjectServer, snapshot: AsyncValue[StafdSnapshot], prev: StafdSnapshot
) -> None:
    """Turn snapshot transitions after ``prev`` into upstream's signals.

    Rapid successive snapshots may be seen as one transition; that is fine, since signals
    only tell clients to re-read, and the comparison is always against what was last signalled.
    """
    async for current in snapshot.eventual_values():
        if current is prev:
            continue
        changed, removed = changes(prev, current)
        prev = current
        for dc in changed:
            t = dc.tid
            await server.emit_signal(
                STAFD.main_interface, "log_pages_changed", "ssssssss",
                t.transport, t.traddr, t.trsvcid, t.subsysnqn, t.host_traddr, t.host_iface,
                t.host_nqn, dc.device,
            )  # fmt: skip
        if removed:
            await server.emit_signal(STAFD.main_interface, "dc_removed", "")


async def run_stafd_dbus(
    *,
    snapshot: AsyncValue[StafdSnapshot],
    info: Callable[[], Mapping[str, Any]],
    tron: TronControl,
    address: str | None = None,
    uid_lookup: Any = None,
    backoff: Backoff = RECONNECT,
    task_status: trio.TaskStatus[DBusObjectServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``started`` fires once the bus name is ours.

    A lost bus is reconnected (``serve_on_bus``). Signals compare against the snapshot taken
    when each connection came up: what changed while off the bus is not signalled late, since
    clients re-read everything when they see our name come back.
    """
    server = StafdDBus(snapshot, info, tron).server(address, uid_lookup)

    def on_connected(nursery: trio.Nursery) -> None:
        # The baseline is taken now, so a change published right after ``started`` is signalled.
        nursery.start_soon(emit_changes, server, snapshot, snapshot.value)
        nursery.start_soon(announce_tron_changes, server, tron, STAFD.debug_interface)

    await serve_on_bus(server, on_connected=on_connected, backoff=backoff, task_status=task_status)
