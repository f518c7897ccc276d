"""The object server against a private dbus-daemon, driven by the blocking client."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import trio
from jeepney import DBusAddress, new_method_call
from stas_dbus_fakes import CONTROLLER, DLPE, FakeStafd, StartServer

from stas.dbus import client
from stas.dbus.common import DBusAccessDenied, DBusCallError, DBusError, DBusUnavailable
from stas.dbus.connection import open_bus
from stas.dbus.idl import STAFD
from tests.helpers.dbus_actors import in_thread

TID = (
    "tcp",
    CONTROLLER["traddr"],
    "8009",
    CONTROLLER["subsysnqn"],
    "",
    "",
    CONTROLLER["host-nqn"],
)


async def staf_client() -> client.ServiceClient:
    return await in_thread(client.connect, STAFD, timeout=5.0)


async def raw_call(path: str, interface: str | None, member: str, sig: str, *args: Any) -> Any:
    conn = await in_thread(client.open_system_bus)
    try:
        msg = new_method_call(
            DBusAddress(path, bus_name=STAFD.bus_name, interface=interface), member, sig, args
        )
        return await in_thread(conn.send_and_get_reply, msg, timeout=5.0)
    finally:
        conn.close()


async def test_introspect_lists_exact_api(start_staf: StartServer) -> None:
    await start_staf()
    with await staf_client() as c:
        (xml,) = await in_thread(
            client.call,
            c.conn,
            STAFD.bus_name,
            STAFD.object_path,
            "org.freedesktop.DBus.Introspectable",
            "Introspect",
        )
    assert xml.index('<interface name="org.nvmexpress.staf.debug">') < xml.index(
        '<interface name="org.nvmexpress.staf">'
    )
    assert '<property name="tron" type="b" access="readwrite"/>' in xml
    assert '<property name="log_level" type="s" access="read"/>' in xml
    assert '<method name="list_controllers">' in xml
    assert '<arg name="detailed" type="b" direction="in"/>' in xml
    assert '<arg name="controller_list" type="aa{ss}" direction="out"/>' in xml
    assert '<arg name="log_pages_json" type="s" direction="out"/>' in xml
    assert '<arg name="host_nqn" type="s" direction="in"/>' in xml
    assert '<signal name="dc_removed"/>' in xml
    assert '<interface name="org.freedesktop.DBus.Properties">' in xml


async def test_introspect_root_leads_to_object(start_staf: StartServer) -> None:
    await start_staf()
    reply = await raw_call("/", "org.freedesktop.DBus.Introspectable", "Introspect", "")
    assert '<node name="org"/>' in reply.body[0]
    reply = await raw_call("/elsewhere", "org.freedesktop.DBus.Introspectable", "Introspect", "")
    assert reply.header.fields[4] == "org.freedesktop.DBus.Error.UnknownObject"


async def test_list_controllers_returns_list_of_dicts(start_staf: StartServer) -> None:
    _, fake = await start_staf()
    with await staf_client() as c:
        (short,) = await in_thread(c.call, "list_controllers", False)
        (detailed,) = await in_thread(c.call, "list_controllers", True)
    assert short == [CONTROLLER]
    assert detailed == [CONTROLLER | {"connected": "True"}]
    assert fake.calls == [("list_controllers", (False,)), ("list_controllers", (True,))]


async def test_get_log_pages_and_all_log_pages(start_staf: StartServer) -> None:
    _, fake = await start_staf()
    with await staf_client() as c:
        (pages,) = await in_thread(c.call, "get_log_pages", *TID)
        (none,) = await in_thread(c.call, "get_log_pages", "tcp", "10.9.9.9", "", "", "", "", "")
        (text,) = await in_thread(c.call, "get_all_log_pages", True)
    assert pages == [DLPE]
    assert none == []
    assert json.loads(text) == [{"discovery-controller": CONTROLLER, "log-pages": [DLPE]}]
    assert ("get_log_pages", TID) in fake.calls


async def test_properties_get_getall_and_root_set(start_staf: StartServer) -> None:
    _, fake = await start_staf()  # real uid lookup: the tests run as root
    with await staf_client() as c:
        assert await in_thread(c.get, "tron") is False
        assert await in_thread(c.get, "log_level") == "INFO"
        await in_thread(c.set, "tron", True)
        assert fake.tron is True
        assert await in_thread(c.get, "tron") is True
        (everything,) = await in_thread(
            client.call,
            c.conn,
            STAFD.bus_name,
            STAFD.object_path,
            client.PROPERTIES,
            "GetAll",
            "s",
            STAFD.debug_interface,
        )
    assert everything == {"tron": ("b", True), "log_level": ("s", "DEBUG")}


async def test_set_refused_for_non_root(start_staf: StartServer) -> None:
    _, fake = await start_staf(uid=1000)
    with await staf_client() as c:
        with pytest.raises(DBusAccessDenied, match="only root may set tron"):
            await in_thread(c.set, "tron", True)
        assert await in_thread(c.get, "tron") is False
    assert fake.tron is False


async def test_set_read_only_and_wrongly_typed_properties(start_staf: StartServer) -> None:
    await start_staf()
    with await staf_client() as c:
        with pytest.raises(DBusCallError) as ro:
            await in_thread(
                client.set_property,
                c.conn,
                STAFD.bus_name,
                STAFD.object_path,
                STAFD.debug_interface,
                "log_level",
                "s",
                "DEBUG",
            )
        with pytest.raises(DBusCallError) as typed:
            await in_thread(
                client.set_property,
                c.conn,
                STAFD.bus_name,
                STAFD.object_path,
                STAFD.debug_interface,
                "tron",
                "s",
                "yes",
            )
        with pytest.raises(DBusCallError) as unknown:
            await in_thread(c.get, "nonesuch")
    # GDBus's answer to setting a read-only property (issue 9 item 6), word for word
    assert ro.value.name == "org.freedesktop.DBus.Error.InvalidArgs"
    assert ro.value.message == "Property 'log_level' is not writable"
    assert typed.value.name == "org.freedesktop.DBus.Error.InvalidArgs"
    assert "'b'" in typed.value.message
    assert unknown.value.name == "org.freedesktop.DBus.Error.UnknownProperty"


async def test_handler_exception_is_error_reply_logged_once(
    start_staf: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    await start_staf()
    caplog.set_level(logging.DEBUG, logger="stas.dbus.service")
    with await staf_client() as c:
        for _ in range(2):
            with pytest.raises(DBusCallError) as err:
                await in_thread(c.call, "process_info")
            assert err.value.name == "org.freedesktop.DBus.Error.Failed"
            assert err.value.message == "process_info exploded"
        (still,) = await in_thread(c.call, "list_controllers", False)
    assert still == [CONTROLLER]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "process_info exploded" in errors[0].getMessage()


async def test_ill_typed_handler_result_becomes_failed(start_staf: StartServer) -> None:
    await start_staf()
    with await staf_client() as c:
        with pytest.raises(DBusCallError, match="does not match signature 's'"):
            await in_thread(c.call, "controller_info", *TID)
        assert await in_thread(c.get, "tron") is False


async def test_bad_arguments_are_invalid_args(start_staf: StartServer) -> None:
    _, fake = await start_staf()
    path, iface = STAFD.object_path, STAFD.main_interface
    wrong_sig = await raw_call(path, iface, "list_controllers", "s", "yes")
    long_arg = await raw_call(path, iface, "get_log_pages", "sssssss", "tcp", "x" * 5000, *TID[2:])
    no_args = await raw_call(path, iface, "list_controllers", "")
    for reply in (wrong_sig, long_arg, no_args):
        assert reply.header.fields[4] == "org.freedesktop.DBus.Error.InvalidArgs"
    assert "expects signature 'b', got 's'" in wrong_sig.body[0]
    assert "traddr is longer than 4096" in long_arg.body[0]
    assert fake.calls == []  # nothing reached the handlers


async def test_unknown_members_and_objects(start_staf: StartServer) -> None:
    await start_staf()
    path, iface = STAFD.object_path, STAFD.main_interface
    method = await raw_call(path, iface, "reboot", "")
    interface = await raw_call(path, "org.example.Nope", "list_controllers", "b", True)
    obj = await raw_call("/org/nvmexpress/other", iface, "list_controllers", "b", True)
    no_iface = await raw_call(path, None, "list_controllers", "b", False)
    ping = await raw_call("/anywhere", "org.freedesktop.DBus.Peer", "Ping", "")
    assert method.header.fields[4] == "org.freedesktop.DBus.Error.UnknownMethod"
    assert interface.header.fields[4] == "org.freedesktop.DBus.Error.UnknownInterface"
    assert obj.header.fields[4] == "org.freedesktop.DBus.Error.UnknownObject"
    assert no_iface.body == ([CONTROLLER],)
    assert ping.body == ()


async def test_concurrency_limit_answers_limits_exceeded(bus_address: str) -> None:
    fake = FakeStafd()
    fake.gate = trio.Event()
    server = fake.server(bus_address, max_concurrent=1)  # one call at a time per caller
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        bus = await open_bus()
        await nursery.start(bus.serve, lambda msg: None)
        target = DBusAddress(STAFD.object_path, STAFD.bus_name, STAFD.main_interface)
        first: list[Any] = []
        first_done = trio.Event()

        async def blocked_call() -> None:
            msg = new_method_call(target, "list_controllers", "b", (False,))
            first.append(await bus.call_checked(msg, timeout=10))
            first_done.set()

        nursery.start_soon(blocked_call)
        await fake.entered.wait()
        msg = new_method_call(target, "list_controllers", "b", (True,))
        with pytest.raises(DBusCallError) as busy:
            await bus.call_checked(msg, timeout=10)
        fake.gate.set()
        await first_done.wait()
        nursery.cancel_scope.cancel()
    assert busy.value.name == "org.freedesktop.DBus.Error.LimitsExceeded"
    assert first == [([CONTROLLER],)]


async def test_second_instance_cannot_take_the_name(start_staf: StartServer) -> None:
    await start_staf()
    with pytest.raises(DBusError, match=r"org\.nvmexpress\.staf is already owned"):
        await start_staf()


async def test_run_with_bogus_address_is_unavailable() -> None:
    server = FakeStafd().server("unix:path=/nonexistent/stas-test-bus")
    with pytest.raises(DBusUnavailable, match="/nonexistent/stas-test-bus"):
        await server.run()


async def test_emit_signal_checks(start_staf: StartServer) -> None:
    server, _ = await start_staf()
    with pytest.raises(ValueError, match="has signature 'ssssssss'"):
        await server.emit_signal(STAFD.main_interface, "log_pages_changed", "s", "x")
    idle = FakeStafd().server("unix:path=/nonexistent")
    with pytest.raises(DBusUnavailable, match="not connected"):
        await idle.emit_signal(STAFD.main_interface, "dc_removed", "")


def test_incomplete_binding_is_refused() -> None:
    from stas.dbus.service import DBusObjectServer, InterfaceImpl

    async def handler(ctx: object, *args: object) -> tuple[()]:
        return ()

    iface = STAFD.interface(STAFD.main_interface)
    methods = {"list_controllers": handler, "reboot": handler}
    with pytest.raises(ValueError) as err:
        DBusObjectServer(STAFD.bus_name, STAFD.object_path, [InterfaceImpl(iface, methods)])
    assert str(err.value) == (
        "interface org.nvmexpress.staf: missing implementations"
        " ['get_log_pages', 'get_all_log_pages'], undefined ['reboot']"
    )
