"""The object server's protections against its callers, and PropertiesChanged, on a real bus.

Issue 13 items 1 and 6: a reply over the bus's message size made dbus-daemon drop the daemon;
one shared concurrency limit let any local user make root's calls fail. Issue 9 item 6:
PropertiesChanged advertised and emitted, read-only Set answered as GDBus does.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest
import trio
from jeepney import DBusAddress, HeaderFields, new_method_call
from stas_dbus_fakes import CONTROLLER, FakeStafd, need_dbus_daemon

from stas.dbus import client
from stas.dbus.admission import CallShares
from stas.dbus.binding import CallContext
from stas.dbus.common import DBusCallError
from stas.dbus.connection import BusConnection, open_bus
from stas.dbus.idl import STAFD
from stas.dbus.testbus import private_bus
from tests.helpers.fixtures import watch_signals

TARGET = DBusAddress(STAFD.object_path, STAFD.bus_name, STAFD.main_interface)
TID = ("tcp", CONTROLLER["traddr"], "8009", CONTROLLER["subsysnqn"], "", "", "")


async def connected(nursery: trio.Nursery, address: str) -> BusConnection:
    bus = await open_bus(address)
    await nursery.start(bus.serve, lambda msg: None)
    return bus


def test_call_shares_bookkeeping() -> None:
    shares = CallShares(2)
    assert shares.try_enter("a") and shares.try_enter("a")
    assert not shares.try_enter("a")  # a's share is used up...
    assert shares.try_enter("b")  # ...b's is not
    shares.leave("a")
    assert shares.in_flight("a") == 1 and shares.try_enter("a")
    for key in ("a", "a", "b"):
        shares.leave(key)
    assert len(shares) == 0  # idle callers are forgotten
    with pytest.raises(ValueError, match="at least 1, not 0"):
        CallShares(0)


class GatedStafd(FakeStafd):
    """list_controllers waits for ``gate``; ``three_in`` is set once three calls hold slots."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = trio.Event()
        self.three_in = trio.Event()

    async def list_controllers(self, ctx: CallContext, detailed: bool) -> tuple[Any, ...]:
        if len(self.calls) == 2:  # this is the third call: admitted, it holds its slot
            self.three_in.set()
        return await super().list_controllers(ctx, detailed)


async def test_a_flooding_uid_does_not_busy_root(bus_address: str) -> None:
    """uid 1000 fills its share from two connections; root, on a third, is still answered."""
    fake = GatedStafd()
    uids: dict[str, int] = {}

    async def uid_of(sender: str) -> int | None:
        return uids.get(sender)

    server = fake.server(bus_address, uid_of, max_concurrent=3)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        flood = [await connected(nursery, bus_address) for _ in range(2)]
        root = await connected(nursery, bus_address)
        uids.update({flood[0].unique_name: 1000, flood[1].unique_name: 1000})
        uids[root.unique_name] = 0
        answered: list[Any] = []

        async def slow_call(bus: BusConnection) -> None:
            msg = new_method_call(TARGET, "list_controllers", "b", (False,))
            answered.append(await bus.call_checked(msg, timeout=10))

        async with trio.open_nursery() as calls:  # left once all three are answered
            for bus in (flood[0], flood[0], flood[1]):  # one uid, two connections: 3 slots
                calls.start_soon(slow_call, bus)
            with trio.fail_after(5):
                await fake.three_in.wait()
            busy_msg = new_method_call(TARGET, "get_log_pages", "sssssss", TID)
            with pytest.raises(DBusCallError) as busy:
                await flood[1].call_checked(busy_msg, timeout=10)
            (pages,) = await root.call_checked(busy_msg, timeout=10)  # old code: LimitsExceeded
            fake.gate.set()
        nursery.cancel_scope.cancel()
    assert len(answered) == 3
    assert busy.value.name == "org.freedesktop.DBus.Error.LimitsExceeded"
    assert busy.value.message == "server busy, retry"
    assert pages == [{"trtype": "tcp", "traddr": "192.168.1.20", "trsvcid": "4420",
                      "subnqn": "nqn.io"}]  # fmt: skip


@pytest.fixture
def small_bus(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A bus that drops any connection sending a message over 1 MiB."""
    need_dbus_daemon()
    with private_bus(max_message_size=1024 * 1024) as address:
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
        yield address


class HugeStafd(FakeStafd):
    async def get_all_log_pages(self, ctx: CallContext, detailed: bool) -> tuple[Any, ...]:
        return (json.dumps(["x" * 1000] * 2000),)  # about 2 MB: over the bus's limit


async def test_oversized_reply_is_refused_and_the_server_stays(small_bus: str) -> None:
    """Old code sent the 2 MB reply: the bus dropped the server (stafd exited)."""
    server = HugeStafd().server(small_bus, max_reply=512 * 1024)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        bus = await connected(nursery, small_bus)
        msg = new_method_call(TARGET, "get_all_log_pages", "b", (True,))
        with pytest.raises(DBusCallError) as refused:
            await bus.call_checked(msg, timeout=10)
        still = await bus.call_checked(
            new_method_call(TARGET, "list_controllers", "b", (False,)), timeout=10
        )
        assert server.connected
        nursery.cancel_scope.cancel()
    assert refused.value.name == "org.freedesktop.DBus.Error.LimitsExceeded"
    assert refused.value.message.startswith("reply to get_all_log_pages would be 2")
    assert refused.value.message.endswith("bytes; limit 524288")
    assert still == ([CONTROLLER],)


async def test_tron_emits_properties_changed(bus_address: str, nursery: trio.Nursery) -> None:
    fake = FakeStafd()
    await nursery.start(fake.server(bus_address).run)
    signals = await watch_signals(nursery, bus_address, interface="org.freedesktop.DBus.Properties",
                                  member="PropertiesChanged", path=STAFD.object_path)  # fmt: skip
    run = trio.to_thread.run_sync
    with await run(functools.partial(client.connect, STAFD, timeout=5.0)) as staf:
        introspect = functools.partial(
            client.call, staf.conn, STAFD.bus_name, STAFD.object_path,
            "org.freedesktop.DBus.Introspectable", "Introspect",
        )  # fmt: skip
        (xml,) = await run(introspect)
        await run(staf.set, "tron", True)
        with trio.fail_after(5):
            sig = await signals.receive()
        await run(staf.set, "tron", True)  # no change: no signal
        await run(staf.set, "tron", False)
        with trio.fail_after(5):
            off = await signals.receive()
    assert '<signal name="PropertiesChanged">' in xml
    assert '<arg name="changed_properties" type="a{sv}"/>' in xml
    assert sig.header.fields[HeaderFields.sender] == (await owner(bus_address))
    assert sig.body == (
        STAFD.debug_interface,
        {"tron": ("b", True), "log_level": ("s", "DEBUG")},
        [],
    )
    assert off.body[1] == {"tron": ("b", False), "log_level": ("s", "INFO")}


async def owner(address: str) -> str:
    bus = await open_bus(address)
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve, lambda msg: None)
        (name,) = await bus.bus_call("GetNameOwner", "s", STAFD.bus_name)
        await bus.aclose()
        nursery.cancel_scope.cancel()
    return str(name)
