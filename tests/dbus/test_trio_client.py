"""stacd's view of stafd: appear/vanish, signals as events, and method calls."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from jeepney import DBusAddress, new_signal
from stas_dbus_fakes import CONTROLLER, DLPE, FakeStafd
from trio_util import AsyncValue

from stas.actors.connector import Connector
from stas.actors.stafd_client import run_stafd_client
from stas.config import parse_service_config
from stas.dbus.common import DBusUnavailable
from stas.dbus.connection import open_bus
from stas.dbus.idl import STAFD
from stas.dbus.trio_client import (
    DcRemoved,
    LogPagesChanged,
    SignalsLost,
    StafdAppeared,
    StafdEvent,
    StafdVanished,
    open_stafd_client,
)
from stas.kernel.fake import FakeKernel
from stas.messages import StacdSnapshot, Tid

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
            assert await client.get_log_pages(Tid(*TID)) == []
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
            assert await next_event(events) == LogPagesChanged(Tid(*TID), device="nvme3")
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


async def test_a_full_backlog_is_reported_never_silently_dropped(bus_address: str) -> None:
    """A consumer that stops reading: signals past the buffer are dropped, then SignalsLost."""
    async with trio.open_nursery() as nursery:
        server = FakeStafd().server(bus_address)
        await nursery.start(server.run)
        send, events = trio.open_memory_channel[StafdEvent](1)
        async with open_stafd_client(send, buffer=8) as client:
            assert isinstance(await next_event(events), StafdAppeared)
            iface = STAFD.main_interface
            for i in range(200):
                await server.emit_signal(iface, "log_pages_changed", "ssssssss", *TID, f"nvme{i}")
            await server.emit_signal(iface, "dc_removed", "")
            got: list[StafdEvent] = []
            while not any(isinstance(e, SignalsLost) for e in got):
                got.append(await next_event(events))
            lost = next(e for e in got if isinstance(e, SignalsLost))
            assert lost.count > 0
            # Everything before the loss was delivered in order; the owner is still known.
            assert all(isinstance(e, LogPagesChanged) for e in got[:-1])
            assert [e.device for e in got[:-1]] == [f"nvme{i}" for i in range(len(got) - 1)]
            assert client.owner is not None
        nursery.cancel_scope.cancel()


class FloodedStafd(FakeStafd):
    """stafd with real per-DC log pages, whose get_log_pages can be held (a slow stacd)."""

    def __init__(self, pages: dict[Tid, list[dict[str, str]]]) -> None:
        super().__init__()
        self.pages = pages
        self.open = trio.Event()
        self.open.set()

    async def get_log_pages(self, ctx: Any, *tid: str) -> tuple[Any, ...]:
        await self.open.wait()
        return (self.pages.get(Tid(*tid), []),)

    async def get_all_log_pages(self, ctx: Any, detailed: bool) -> tuple[Any, ...]:
        listing = [
            {"discovery-controller": tid.as_dict() | {"genctr": "1"}, "log-pages": pages}
            for tid, pages in self.pages.items()
        ]
        return (json.dumps(listing),)


def io_page(*nqns: str) -> list[dict[str, str]]:
    return [
        {"trtype": "tcp", "adrfam": "ipv6", "traddr": "::1", "trsvcid": "4420",
         "subnqn": nqn, "subtype": "nvme", "eflags": "0"}
        for nqn in nqns
    ]  # fmt: skip


async def test_10000_signal_flood_leaves_stacd_with_exactly_the_right_controllers(
    bus_address: str,
) -> None:
    """The whole stacd chain over a real bus: a change whose signal is dropped still arrives.

    stacd is held in a get_log_pages call while stafd sends 10,000 signals for DC1; then DC2's
    page changes and its one signal is dropped (the backlog is full). Without the resync on
    loss, stacd would keep DC2's old controller forever.
    """
    host = "nqn.2014-08.org.nvmexpress:uuid:0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7f10"
    wk = "nqn.2014-08.org.nvmexpress.discovery"
    dc1 = Tid("tcp", "::1", "8009", wk, "", "", host)
    dc2 = Tid("tcp", "::2", "8009", wk, "", "", host)
    fake = FloodedStafd({dc1: io_page("a", "b"), dc2: io_page("c")})
    kernel = FakeKernel()
    published = AsyncValue(StacdSnapshot())
    config, _ = parse_service_config("", "stacd")
    connector = Connector(
        config=config, host_nqn=host, hostid="", kernel=kernel, published=published
    )
    inbox_send, inbox = trio.open_memory_channel[Any](1000)

    async def settled(nqns: set[str]) -> None:
        with trio.fail_after(60):
            while {s.tid.subsysnqn for s in published.value.iocs if s.connected} != nqns:
                await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        server = fake.server(bus_address)
        await nursery.start(server.run)
        await nursery.start(connector.run, inbox)

        async def uevents() -> None:
            async for ev in kernel.events:
                await inbox_send.send(ev)

        nursery.start_soon(uevents)
        nursery.start_soon(lambda: run_stafd_client(inbox_send, address=bus_address, grace=3600))
        await settled({"a", "b", "c"})

        fake.open = trio.Event()  # stacd's next get_log_pages waits: its queues fill up
        iface = STAFD.main_interface
        for i in range(10_000):
            fake.pages[dc1] = io_page("a", "b" if i % 2 else "b2")  # ends with b
            await server.emit_signal(iface, "log_pages_changed", "ssssssss",
                                     *dc1.as_dict().values(), "nvme0")  # fmt: skip
        fake.pages[dc2] = io_page("d")
        await server.emit_signal(iface, "log_pages_changed", "ssssssss",
                                 *dc2.as_dict().values(), "nvme1")  # fmt: skip
        fake.open.set()
        await settled({"a", "b", "d"})
        assert kernel.state() == {("a", "::1", "4420"), ("b", "::1", "4420"),
                                  ("d", "::1", "4420")}  # fmt: skip
        nursery.cancel_scope.cancel()
