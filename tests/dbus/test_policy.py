"""The shipped bus policy files, loaded by a real dbus-daemon with system-bus style defaults.

Non-root callers are played by ``dbus-send`` running as the user nobody.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import trio
from stas_dbus_fakes import CONTROLLER, FakeStafd, need_dbus_daemon

from stas.dbus import client
from stas.dbus.common import DBusUnavailable
from stas.dbus.idl import STAFD
from stas.dbus.testbus import private_bus
from tests.helpers import fixtures

CONF = Path(__file__).resolve().parents[2] / "conf"
system_like_bus = fixtures.system_like_bus  # the shipped policy enforced (a fixture)
NOBODY = 65534


def need_nobody() -> None:
    if os.geteuid() != 0 or shutil.which("dbus-send") is None:
        pytest.skip("needs root (to run dbus-send as nobody) and dbus-send")


async def send_as_nobody(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = ["dbus-send", f"--bus={address}", "--print-reply", *args]
    run = lambda: subprocess.run(  # noqa: E731
        cmd, user=NOBODY, group=NOBODY, capture_output=True, text=True, timeout=10, cwd="/"
    )
    return await trio.to_thread.run_sync(run)


SET_TRON = (
    f"--dest={STAFD.bus_name}",
    STAFD.object_path,
    "org.freedesktop.DBus.Properties.Set",
    f"string:{STAFD.debug_interface}",
    "string:tron",
    "variant:boolean:true",
)


async def test_policy_lets_root_own_and_nobody_read_but_not_set(system_like_bus: str) -> None:
    need_nobody()
    async with trio.open_nursery() as nursery:
        fake = FakeStafd()
        await nursery.start(fake.server(system_like_bus).run)  # root may own the name
        listed = await send_as_nobody(
            system_like_bus,
            f"--dest={STAFD.bus_name}",
            STAFD.object_path,
            f"{STAFD.main_interface}.list_controllers",
            "boolean:false",
        )
        assert listed.returncode == 0, listed.stderr
        assert CONTROLLER["traddr"] in listed.stdout
        denied = await send_as_nobody(system_like_bus, *SET_TRON)
        assert denied.returncode != 0
        assert "AccessDenied" in denied.stderr
        assert fake.tron is False
        with await trio.to_thread.run_sync(
            lambda: client.connect(STAFD, address=system_like_bus)
        ) as root_client:
            await trio.to_thread.run_sync(root_client.set, "tron", True)
        assert fake.tron is True
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("name", ["org.nvmexpress.staf", "org.nvmexpress.stac.debug"])
async def test_policy_refuses_names_to_nobody(system_like_bus: str, name: str) -> None:
    need_nobody()
    result = await send_as_nobody(
        system_like_bus,
        "--dest=org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus.RequestName",
        f"string:{name}",
        "uint32:4",
    )
    assert result.returncode != 0
    assert "AccessDenied" in result.stderr


async def test_server_refuses_set_from_real_non_root_uid(bus_address: str) -> None:
    """On a permissive bus the call reaches us; the uid comes from the bus daemon."""
    need_nobody()
    async with trio.open_nursery() as nursery:
        fake = FakeStafd()
        await nursery.start(fake.server(bus_address).run)
        result = await send_as_nobody(bus_address, *SET_TRON)
        assert result.returncode != 0
        assert "only root may set tron" in result.stderr
        assert fake.tron is False
        nursery.cancel_scope.cancel()


async def test_server_reports_a_lost_bus() -> None:
    need_dbus_daemon()
    lost: list[DBusUnavailable] = []
    server = None
    with contextlib.ExitStack() as stack:
        address = stack.enter_context(private_bus())
        server = FakeStafd().server(address)

        async def run(task_status: trio.TaskStatus[None]) -> None:
            try:
                await server.run(task_status=task_status)
            except DBusUnavailable as exc:
                lost.append(exc)

        async with trio.open_nursery() as nursery:
            await nursery.start(run)
            assert server.connected
            await trio.to_thread.run_sync(stack.close)  # the bus daemon goes away
    assert len(lost) == 1
    assert "D-Bus connection" in str(lost[0])
    assert not server.connected


async def test_policy_keeps_debug_methods_for_root(system_like_bus: str) -> None:
    need_nobody()
    async with trio.open_nursery() as nursery:
        fake = FakeStafd()
        await nursery.start(fake.server(system_like_bus).run)
        denied = await send_as_nobody(
            system_like_bus,
            f"--dest={STAFD.bus_name}",
            STAFD.object_path,
            f"{STAFD.debug_interface}.process_info",
        )
        assert denied.returncode != 0 and "AccessDenied" in denied.stderr
        got = await send_as_nobody(
            system_like_bus,
            f"--dest={STAFD.bus_name}",
            STAFD.object_path,
            "org.freedesktop.DBus.Properties.Get",
            f"string:{STAFD.debug_interface}",
            "string:tron",
        )
        assert got.returncode == 0, got.stderr  # reading tron stays open
        nursery.cancel_scope.cancel()
