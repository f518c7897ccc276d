"""The blocking client: addresses, and 'daemon not there' always meaning DBusUnavailable."""

from __future__ import annotations

import functools
import subprocess
import sys
from typing import Any

import pytest
import trio
from stas_dbus_fakes import StartServer

from stas.dbus import client
from stas.dbus.common import DBusCallError, DBusUnavailable, call_error, system_bus_address
from stas.dbus.idl import STACD, STAFD


async def in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


def test_system_bus_address_honours_environment() -> None:
    assert system_bus_address({}) == "unix:path=/run/dbus/system_bus_socket"
    assert system_bus_address({"DBUS_SYSTEM_BUS_ADDRESS": ""}).endswith("system_bus_socket")
    env = {"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/tmp/x"}
    assert system_bus_address(env) == "unix:path=/tmp/x"


@pytest.mark.parametrize(
    "address",
    [
        "unix:path=/nonexistent/stas/bus",
        "tcp:host=127.0.0.1,port=1",
        "garbage",
        "unix:path",
    ],
)
def test_bogus_address_is_unavailable(address: str) -> None:
    with pytest.raises(DBusUnavailable) as err:
        client.open_system_bus(address)
    assert address in str(err.value)


def test_bogus_env_address_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/env/bus")
    with pytest.raises(DBusUnavailable, match="/nonexistent/env/bus"):
        client.connect(STAFD)


async def test_service_not_running_is_unavailable(bus_address: str) -> None:
    with pytest.raises(DBusUnavailable, match=r"org\.nvmexpress\.stac is not running"):
        await in_thread(client.connect, STACD)
    conn = await in_thread(client.open_system_bus)
    try:
        with pytest.raises(DBusUnavailable, match="ServiceUnknown"):
            await in_thread(
                client.call,
                conn,
                STAFD.bus_name,
                STAFD.object_path,
                STAFD.main_interface,
                "list_controllers",
                "b",
                False,
            )
    finally:
        conn.close()


async def test_connect_then_call_by_name(start_staf: StartServer) -> None:
    await start_staf()
    with await in_thread(client.connect, STAFD) as c:
        assert await in_thread(c.get, "log_level") == "INFO"
        with pytest.raises(KeyError, match="nonesuch"):
            await in_thread(c.set, "nonesuch", 1)


def test_call_error_mapping() -> None:
    assert isinstance(call_error("org.freedesktop.DBus.Error.NoReply", ()), DBusUnavailable)
    denied = call_error("org.freedesktop.DBus.Error.AccessDenied", ("nope",))
    assert isinstance(denied, client.DBusCallError)
    assert isinstance(denied, client.DBusAccessDenied)
    assert denied.message == "nope"
    other = call_error("org.example.Error", ("bad thing", 3))
    assert isinstance(other, DBusCallError)
    assert (other.name, other.message, str(other)) == (
        "org.example.Error",
        "bad thing",
        "org.example.Error: bad thing",
    )


def test_client_import_does_not_pull_in_trio() -> None:
    code = (
        "import sys, stas.dbus.client; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('trio', 'outcome')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
