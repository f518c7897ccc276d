"""A restarted bus hands out the same unique names again: who a caller is must be asked anew.

The server cached each caller's uid by unique name and kept the cache across reconnections.
After a dbus-daemon restart the numbering starts over, so the first unprivileged client could
get the name root had before, and be taken for root (Set tron, secrets in replies).
"""

from __future__ import annotations

import contextlib
from typing import Any

import trio
from jeepney import DBusAddress, Message, new_method_call
from stas_dbus_fakes import FakeStafd, need_dbus_daemon
from test_policy import SET_TRON, need_nobody, send_as_nobody

from stas.dbus.common import DBusUnavailable
from stas.dbus.connection import open_bus
from stas.dbus.idl import STAFD
from stas.dbus.service import DBusObjectServer
from stas.dbus.testbus import restartable_bus


async def run_until_lost(
    server: DBusObjectServer, lost: trio.Event, *, task_status: Any = trio.TASK_STATUS_IGNORED
) -> None:
    with contextlib.suppress(DBusUnavailable):
        await server.run(task_status=task_status)
    lost.set()


async def test_a_name_reused_after_a_bus_restart_is_not_taken_for_root() -> None:
    need_dbus_daemon()
    need_nobody()
    fake = FakeStafd()
    with restartable_bus() as bus:
        server = fake.server(bus.address)  # the real uid lookup: GetConnectionUnixUser
        async with trio.open_nursery() as nursery:
            lost = trio.Event()
            await nursery.start(run_until_lost, server, lost)  # first connection: :1.N
            root = await open_bus(bus.address)  # second: :1.N+1, root
            await nursery.start(root.serve, lambda msg: None)
            await root.call_checked(_set_tron(False), timeout=10)  # root's uid is looked up
            await root.aclose()
            await trio.to_thread.run_sync(bus.stop)
            await lost.wait()
            await trio.to_thread.run_sync(bus.start)
            await nursery.start(run_until_lost, server, trio.Event())  # first again: :1.N
            result = await send_as_nobody(bus.address, *SET_TRON)  # second again: root's name
            nursery.cancel_scope.cancel()
    assert result.returncode != 0, "nobody was taken for root"
    assert "only root may set tron" in result.stderr
    assert fake.tron is False


def _set_tron(value: bool) -> Message:
    target = DBusAddress(STAFD.object_path, STAFD.bus_name, "org.freedesktop.DBus.Properties")
    return new_method_call(target, "Set", "ssv", (STAFD.debug_interface, "tron", ("b", value)))
