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
from typing import Any, Protocol

import trio
from trio_util import AsyncValue

from stas.dbus.binding import CallContext, PropertyImpl
from stas.dbus.idl import STAFD
from stas.dbus.redact import redact_secrets
from stas.dbus.service import DBusObjectServer, bind_service
from stas.messages import DcStatus, StafdSnapshot, Tid

log = logging.getLogger("stas.dbus.stafd")

DEFAULT_TRSVCID = {"tcp": "8009", "rdma": "4420"}


class TronControl(Protocol):
    """Run-time trace switch (the ``tron`` property, ``stafctl tron|troff``)."""

    def get(self) -> bool: ...

    def set(self, value: bool) -> None: ...

    def level_name(self) -> str: ...


def dc_dict(dc: DcStatus, *, detailed: bool) -> dict[str, str]:
    """Upstream's controller dict: TID keys, per-controller config keys, device (+ details)."""
    out = dc.tid.as_dict()
    out.update({k: str(v) for k, v in dc.params.items()})
    out["device"] = dc.device
    if detailed:
        out.update(
            {
                "origin": dc.origin,
                "connected": str(dc.connected),
                "state": dc.state,
                "connect attempts": str(dc.connect_attempts),
                "last error": dc.last_error,
                "cntrltype": dc.cntrltype,
                "dctype": dc.dctype,
                "registered": str(dc.registered),
                "genctr": "" if dc.genctr is None else str(dc.genctr),
                "log page entries": str(len(dc.log_pages)),
            }
        )
    return out


def find_dc(snapshot: StafdSnapshot, args: tuple[str, ...]) -> DcStatus | None:
    """The DC named by upstream's 7 strings; '' trsvcid and host_nqn take their defaults."""
    transport, traddr, trsvcid, subsysnqn, host_traddr, host_iface, host_nqn = args
    trsvcid = trsvcid or DEFAULT_TRSVCID.get(transport, "")
    for dc in snapshot.dcs:
        t = dc.tid
        if (t.transport, t.traddr, t.trsvcid, t.subsysnqn, t.host_traddr, t.host_iface) == (
            transport, traddr, trsvcid, subsysnqn, host_traddr, host_iface,
        ) and host_nqn in ("", t.host_nqn):  # fmt: skip
            return dc
    return None


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


class StafdDBus:
    """Handlers for the staf interfaces over a published snapshot."""

    def __init__(
        self,
        snapshot: AsyncValue[StafdSnapshot],
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
        dcs = [dc_dict(dc, detailed=detailed) for dc in self.snapshot.value.dcs]
        return (await self._shown(ctx, dcs),)

    async def get_log_pages(self, ctx: CallContext, *tid: str) -> tuple[Any, ...]:
        dc = find_dc(self.snapshot.value, tid)
        return (dc.dlpes() if dc else [],)

    async def get_all_log_pages(self, ctx: CallContext, detailed: bool) -> tuple[Any, ...]:
        items = [
            {"discovery-controller": dc_dict(dc, detailed=detailed), "log-pages": dc.dlpes()}
            for dc in self.snapshot.value.dcs
        ]
        return (json.dumps(await self._shown(ctx, items)),)

    async def process_info(self, ctx: CallContext) -> tuple[Any, ...]:
        return (json.dumps(await self._shown(ctx, dict(self.info())), default=str),)

    async def controller_info(self, ctx: CallContext, *tid: str) -> tuple[Any, ...]:
        dc = find_dc(self.snapshot.value, tid)
        if dc is None:
            return ("{}",)
        return (json.dumps(await self._shown(ctx, dc_dict(dc, detailed=True))),)

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
            "get_log_pages": self.get_log_pages,
            "get_all_log_pages": self.get_all_log_pages,
            "process_info": self.process_info,
            "controller_info": self.controller_info,
        }
        properties = {
            "tron": PropertyImpl(self.get_tron, self.set_tron),
            "log_level": PropertyImpl(self.get_log_level),
        }
        return DBusObjectServer(
            STAFD.bus_name,
            STAFD.object_path,
            bind_service(STAFD, methods, properties),
            address=address,
            uid_lookup=uid_lookup,
        )


async def emit_changes(server: DBusObjectServer, snapshot: AsyncValue[StafdSnapshot]) -> None:
    """Turn snapshot transitions into upstream's signals."""
    prev = snapshot.value
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
    task_status: trio.TaskStatus[DBusObjectServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``started`` fires once the bus name is ours."""
    server = StafdDBus(snapshot, info, tron).server(address, uid_lookup)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        nursery.start_soon(emit_changes, server, snapshot)
        task_status.started(server)
