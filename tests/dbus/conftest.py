"""Fixtures: a private dbus-daemon per test, and a stafd-shaped server with fake handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import trio
from stas_dbus_fakes import FakeStafd, StartServer, need_dbus_daemon

from stas.dbus.service import DBusObjectServer
from stas.dbus.testbus import private_bus


@pytest.fixture
def bus_address(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private permissive bus, also exported as the system bus for the test."""
    need_dbus_daemon()
    with private_bus() as address:
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
        yield address


@pytest.fixture
async def start_staf(bus_address: str, nursery: trio.Nursery) -> AsyncIterator[StartServer]:
    """Start a fake stafd on the private bus; ``uid`` fakes every caller's uid."""

    async def start(
        uid: int | None = None, fake: FakeStafd | None = None
    ) -> tuple[DBusObjectServer, FakeStafd]:
        fake = fake or FakeStafd()

        async def fixed_uid(sender: str) -> int | None:
            return uid

        server = fake.server(bus_address, fixed_uid if uid is not None else None)
        await nursery.start(server.run)
        return server, fake

    yield start
