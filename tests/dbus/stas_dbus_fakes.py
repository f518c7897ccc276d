"""Shared fakes for the D-Bus tests: a stafd-shaped set of handlers with canned data."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from stas.dbus.binding import CallContext, PropertyImpl, UidLookup
from stas.dbus.idl import STAFD
from stas.dbus.service import DBusObjectServer, bind_service
from stas.dbus.testbus import dbus_daemon_path
from tests.helpers.entries import dc_tid

CONTROLLER = dc_tid("192.168.1.10").as_dict() | {"device": "nvme0"}  # upstream's TID dict
# a deliberately partial DLPE dict (tests/dbus/test_server_limits.py compares it literally)
DLPE = {"trtype": "tcp", "traddr": "192.168.1.20", "trsvcid": "4420", "subnqn": "nqn.io"}


def need_dbus_daemon() -> None:
    if dbus_daemon_path() is None:
        pytest.skip("dbus-daemon is not installed (Debian package dbus-daemon)")


class FakeStafd:
    """stafd's D-Bus handlers with canned data; records what it was asked."""

    def __init__(self) -> None:
        self.tron = False
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.gate: trio.Event | None = None  # when set, list_controllers waits for it
        self.entered = trio.Event()

    async def list_controllers(self, ctx: CallContext, detailed: bool) -> tuple[Any, ...]:
        self.calls.append(("list_controllers", (detailed,)))
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        extra = {"connected": "True"} if detailed else {}
        return ([CONTROLLER | extra],)

    async def get_log_pages(self, ctx: CallContext, *tid: str) -> tuple[Any, ...]:
        self.calls.append(("get_log_pages", tid))
        return ([DLPE] if tid[1] == CONTROLLER["traddr"] else [],)

    async def get_all_log_pages(self, ctx: CallContext, detailed: bool) -> tuple[Any, ...]:
        self.calls.append(("get_all_log_pages", (detailed,)))
        return (json.dumps([{"discovery-controller": CONTROLLER, "log-pages": [DLPE]}]),)

    async def process_info(self, ctx: CallContext) -> tuple[Any, ...]:
        raise RuntimeError("process_info exploded")

    async def controller_info(self, ctx: CallContext, *tid: str) -> tuple[Any, ...]:
        return (42,)  # wrong type on purpose: the signature says "s"

    async def get_tron(self, ctx: CallContext) -> bool:
        return self.tron

    async def set_tron(self, ctx: CallContext, value: bool) -> None:
        self.tron = value

    async def get_log_level(self, ctx: CallContext) -> str:
        return "DEBUG" if self.tron else "INFO"

    def server(
        self, address: str, uid_lookup: UidLookup | None = None, **limits: int
    ) -> DBusObjectServer:
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
            **limits,
        )


StartServer = Callable[..., Awaitable[tuple[DBusObjectServer, FakeStafd]]]
