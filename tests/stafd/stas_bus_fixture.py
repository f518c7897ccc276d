"""The private-bus fixture, shared by tests/stafd and tests/stacd."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stas.dbus.testbus import dbus_daemon_path, private_bus


@pytest.fixture
def bus_address(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if dbus_daemon_path() is None:
        pytest.skip("dbus-daemon is not installed (Debian package dbus)")
    with private_bus() as address:
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
        yield address
