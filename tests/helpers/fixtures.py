"""Fixtures for tests that need a private dbus-daemon; a conftest imports the ones it uses."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio
from jeepney import MatchRule, Message

from stas.dbus.connection import BusConnection, open_bus
from stas.dbus.testbus import dbus_daemon_path, private_bus
from tests.helpers.config import host_files
from tests.helpers.e2e import HOSTID, HOSTNQN, World


def need_dbus_daemon() -> None:
    if dbus_daemon_path() is None:
        pytest.skip("dbus-daemon is not installed (Debian package dbus)")


POLICY_FILES = [
    Path(__file__).resolve().parents[2] / "conf" / name
    for name in ("org.nvmexpress.staf.conf", "org.nvmexpress.stac.conf")
]


@pytest.fixture
def system_like_bus() -> Iterator[str]:
    """A private bus that enforces the system bus's default-deny rules plus our shipped D-Bus
    policy files (who may own the names, read, set, call the debug methods)."""
    need_dbus_daemon()
    with private_bus(system_like=True, includes=POLICY_FILES) as address:
        yield address


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
    sys_conf = host_files(tmp_path, HOSTNQN, HOSTID)
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=bus_address, STAS_SYS_CONF=str(sys_conf))
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    w = World(tmp_path, env, bus_address)
    yield w
    w.stop_all()


async def watch_signals(
    nursery: trio.Nursery,
    address: str,
    *,
    sender: str | None = None,
    interface: str | None = None,
    member: str | None = None,
    path: str | None = None,
) -> trio.MemoryReceiveChannel[Message]:
    """The signals a match rule selects, from a new connection on ``address``; the match is
    in place on return. The connection lives (and is closed) with ``nursery``.

    Only what the rule matches is passed on. The bus also sends each new connection its own
    NameAcquired, unicast (no match needed); whether that arrives before jeepney's Hello
    stops reading or after our receive loop took over is timing, so tests that took "the
    next signal" got NameAcquired now and then under load. ``sender`` (a well-known name)
    is left to the bus: the signals carry the owner's unique name.
    """
    rule = MatchRule(type="signal", sender=sender, interface=interface, member=member, path=path)
    local = MatchRule(type="signal", interface=interface, member=member, path=path)
    send, receive = trio.open_memory_channel[Message](100)

    def on_message(msg: Message) -> None:
        if local.matches(msg):
            send.send_nowait(msg)  # a full channel fails the test loudly, never drops

    conn = await open_bus(address)
    await nursery.start(_serve_until_closed, conn, on_message)
    await conn.bus_call("AddMatch", "s", rule.serialise())
    return receive


async def _serve_until_closed(
    conn: BusConnection,
    on_message: Callable[[Message], None],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    try:
        await conn.serve(on_message, task_status=task_status)
    finally:
        with trio.CancelScope(shield=True):
            await conn.aclose()
