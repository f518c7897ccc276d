"""Fixtures for tests that need a private dbus-daemon; a conftest imports the ones it uses."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from stas.dbus.testbus import dbus_daemon_path, private_bus
from tests.helpers.e2e import HOSTID, HOSTNQN, World


def need_dbus_daemon() -> None:
    if dbus_daemon_path() is None:
        pytest.skip("dbus-daemon is not installed (Debian package dbus)")


@pytest.fixture
def bus_address(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private permissive bus, also exported as the system bus for the test."""
    need_dbus_daemon()
    with private_bus() as address:
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
        yield address


@pytest.fixture
def world(tmp_path: Path, bus_address: str) -> Iterator[World]:
    """A directory with host files and sys.conf, an environment pointing at the private bus,
    and a list of started processes that are stopped (last first) after the test."""
    (tmp_path / "hostnqn").write_text(HOSTNQN + "\n")
    (tmp_path / "hostid").write_text(HOSTID + "\n")
    (tmp_path / "sys.conf").write_text(
        f"[Host]\nnqn=file://{tmp_path}/hostnqn\nid=file://{tmp_path}/hostid\n"
    )
    env = dict(
        os.environ, DBUS_SYSTEM_BUS_ADDRESS=bus_address, STAS_SYS_CONF=str(tmp_path / "sys.conf")
    )
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    w = World(tmp_path, env, bus_address)
    yield w
    w.stop_all()
