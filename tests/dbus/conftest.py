"""Fixtures: a private dbus-daemon per test, and a stafd-shaped server with fake handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
from stas_dbus_fakes import FakeStafd, StartServer

from stas.dbus.service import DBusObjectServer
from tests.helpers.bus_scripts import scripted_bus  # noqa: F401 - fixture
from tests.helpers.fixtures import bus_address  # noqa: F401 - fixture


@pytest.fixture
async def start_staf(bus_address: str, nursery: trio.Nursery) -> AsyncIterator[StartServer]:  # noqa: F811
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
