"""stacd's view of stafd: appear/vanish, signals as events, and method calls."""

from __future__ import annotations

import json

import pytest
import trio
from jeepney import DBusAddress, new_signal
from stas_dbus_fakes import CONTROLLER, DLPE, FakeStafd

from stas.dbus.common import DBusUnavailable
from stas.dbus.connection import open_bus
from stas.dbus.idl import STAFD
from stas.dbus.trio_client import (
    DcRemoved,
    LogPagesChanged,
    StafdAppeared,
    StafdEvent,
    StafdVanished,
    open_stafd_client,
)

GUARD = 10  # seconds; only trips if an expected event never comes

TID = ("tcp", "10.0.0.5", "8009", "nqn.disc", "", "eth0", "nqn.host")


async def next_event(events: trio.MemoryReceiveChannel[StafdEvent]) -> StafdEvent:
    with trio.fail_after(GUARD):
        return await events.receive()


async def test_appear_and_vanish_are_observed(bus_address: str) -> None:
    send, events = trio.open_memory_channel[StafdEvent](10)
    async with open_stafd_client(send) as client, trio.open_nursery() as nursery:
        assert client.owner is None
        server_scope = trio.CancelScope()

        async def run_server(task_status: trio.TaskStatus[None]) -> None:
            with server_scope:
                await FakeStafd().server(bus_address).run(task_status=task_status)

        await nursery.start(run_server)
        appeared = await next_event(events)
        assert isinstance(appeared, StafdAppeared)
        assert appeared.owner.startswith(":")
        assert client.owner == appeared.owner
        server_scope.cancel()
        assert await next_event(events) == StafdVanished()
        assert client.owner is None
        with pytest.raises(DBusUnavailable):
            await client.list_controllers()


async def test_running_stafd_reported_first_and_called(bus_address: str) -> None:
    async with trio.open_nursery() as nursery:
        fake = FakeStafd()
        await nursery.start(fake.server(bus_address).run)
        send, events = trio.open_memory_channel[StafdEvent](10)
        async with open_stafd_client(send) as client:
            first = await next_event(events)
            assert isinstance(first, StafdAppeared)
            text = await client.get_all_log_pages()
            assert json.loads(text) == [{"discovery-controller": CONTROLLER, "log-pages": [DLPE]}]
            assert await client.list_controllers(True) == [CONTROLLER | {"connected": "True"}]
            assert await client.get_log_pages(*TID) == []
        assert ("get_all_log_pages", (True,)) in fake.calls
        nursery.cancel_scope.cancel()


async def test_signals_become_events_and_spoofs_are_ignored(bus_address: str) -> None:
    async with trio.open_nursery() as nursery:
        server = FakeStafd().server(bus_address)
        await nursery.start(server.run)
        send, events = trio.open_memory_channel[StafdEvent](10)
        async with open_stafd_client(send):
            assert isinstance(await next_event(events), StafdAppeared)

            # Another connection pretending to be stafd: must not produce an event.
            spoofer = await open_bus()
            nursery.start_soon(spoofer.serve, lambda msg: None)
            emitter = DBusAddress(STAFD.object_path, interface=STAFD.main_interface)
            await spoofer.send(new_signal(emitter, "dc_removed"))

            iface = STAFD.main_interface
            await server.emit_signal(iface, "log_pages_changed", "ssssssss", *TID, "nvme3")
            await server.emit_signal(iface, "dc_removed", "")
            assert await next_event(events) == LogPagesChanged(*TID, device="nvme3")
            assert await next_event(events) == DcRemoved()
            await spoofer.aclose()
        nursery.cancel_scope.cancel()


async def test_unreachable_bus_raises_unavailable() -> None:
    send, _ = trio.open_memory_channel[StafdEvent](1)
    with pytest.raises(DBusUnavailable, match="/nonexistent/bus"):
        async with open_stafd_client(send, address="unix:path=/nonexistent/bus"):
            pass


async def test_consumer_error_is_not_wrapped_in_a_group(bus_address: str) -> None:
    send, _ = trio.open_memory_channel[StafdEvent](1)
    with pytest.raises(KeyError, match="consumer bug"):
        async with open_stafd_client(send):
            raise KeyError("consumer bug")
