"""A lost bus is reconnected, never the end of stafd or stacd (issue 13 item 1).

The schedule is checked under MockClock with a scripted server; the real thing with a
dbus-daemon restarted under a running stafd D-Bus actor (and stacd's), which must come back,
own its name again, answer, and signal only what changed after it came back.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import trio
import trio.testing
from jeepney import DBusAddress, new_method_call
from trio_util import AsyncValue

from stas.actors.daemon_dbus import Backoff, serve_on_bus
from stas.actors.stacd_dbus import run_stacd_dbus
from stas.actors.stafd_dbus import run_stafd_dbus
from stas.dbus.common import DBusError, DBusUnavailable
from stas.dbus.connection import BusConnection, open_bus
from stas.dbus.idl import STACD, STAFD
from stas.dbus.testbus import PrivateBus, dbus_daemon_path, restartable_bus
from stas.messages import IocStatus, StacdSnapshot, StafdSnapshot, Tid
from tests.helpers.dbus_actors import DC, SEED, Tron, seed_dc, snapshot
from tests.helpers.fixtures import watch_signals

BUS = "org.freedesktop.DBus"
FAST = Backoff(initial=0.02, maximum=0.2)  # real dbus-daemon below: keep the test short


class ScriptedServer:
    """Plays one step per ``run``: 'drop' (up, then lost), 'refuse' (no bus), 'up' (stays)."""

    bus_name = "org.example.scripted"

    def __init__(self, *steps: str) -> None:
        self.steps = list(steps)
        self.attempts: list[float] = []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.attempts.append(trio.current_time())
        step = self.steps.pop(0)
        if step == "refuse":
            raise DBusUnavailable("cannot connect to the D-Bus bus at unix:path=/x")
        task_status.started()
        if step == "drop":
            await trio.sleep(10)
            raise DBusUnavailable("D-Bus connection lost: Connection reset by peer")
        await trio.sleep_forever()


async def test_backoff_schedule_and_logs(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="stas.dbus")
    server = ScriptedServer("drop", "refuse", "refuse", "refuse", "drop", "up")
    connected: list[float] = []
    async with trio.open_nursery() as nursery:
        started = await nursery.start(
            lambda task_status: serve_on_bus(
                server,
                on_connected=lambda n: connected.append(trio.current_time()),
                backoff=Backoff(initial=1, maximum=3),
                task_status=task_status,
            )
        )
        await trio.sleep(100)
        nursery.cancel_scope.cancel()
    assert started is server
    # lost at 10; retries after 1, 2, 3, 3 s (capped); up at 19; lost at 29, back after 1 s
    assert server.attempts == [0, 11, 13, 16, 19, 30]
    assert connected == [0, 19, 30]
    text = [r.getMessage() for r in caplog.records]
    assert text[0] == (
        "D-Bus: D-Bus connection lost: Connection reset by peer;"
        " reconnecting (first attempt in 1.0 s)"
    )
    assert "still off the bus" in text[1] and "next attempt in 2.0 s" in text[1]
    assert "D-Bus: back on the bus as org.example.scripted after 4 attempt(s)" in text
    assert "D-Bus: back on the bus as org.example.scripted after 1 attempt(s)" in text


async def test_first_connection_failure_still_ends_the_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A daemon that never owned its name must not report ready (exit 1, as before)."""
    with pytest.raises(DBusError, match="cannot connect"):
        await serve_on_bus(ScriptedServer("refuse"))


async def test_other_errors_are_not_swallowed(autojump_clock: trio.testing.MockClock) -> None:
    def broken(nursery: trio.Nursery) -> None:
        raise RuntimeError("bug in on_connected")

    with pytest.raises(BaseExceptionGroup) as info:
        await serve_on_bus(ScriptedServer("up"), on_connected=broken)
    assert info.group_contains(RuntimeError, match="bug in on_connected")


@pytest.fixture
def bus() -> Iterator[PrivateBus]:
    if dbus_daemon_path() is None:
        pytest.skip("dbus-daemon is not installed (Debian package dbus)")
    with restartable_bus() as bus:
        yield bus


async def client_bus(nursery: trio.Nursery, address: str) -> BusConnection:
    conn = await open_bus(address)
    await nursery.start(conn.serve, lambda msg: None)
    return conn


async def wait_for_owner(nursery: trio.Nursery, address: str, name: str) -> BusConnection:
    """A client of the (restarted) bus once ``name`` is owned there: already owned when we
    subscribed to NameOwnerChanged, or announced by it after."""
    owners = await watch_signals(
        nursery, address, sender=BUS, interface=BUS, member="NameOwnerChanged"
    )
    conn = await client_bus(nursery, address)
    (owned,) = await conn.bus_call("NameHasOwner", "s", name)
    with trio.fail_after(10):
        while not owned:
            gone_or_new = (await owners.receive()).body
            owned = gone_or_new[0] == name and bool(gone_or_new[2])
    return conn


class OffTheBus(logging.Handler):
    """Set once the actor logs a failed reconnection attempt (the bus still down)."""

    def __init__(self) -> None:
        super().__init__()
        self.event = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "still off the bus" in record.getMessage():
            self.event.set()


@pytest.fixture
def off_the_bus() -> Iterator[trio.Event]:
    handler = OffTheBus()
    logger = logging.getLogger("stas.dbus")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler.event
    logger.removeHandler(handler)
    logger.setLevel(level)


async def test_stafd_comes_back_after_the_bus_restarts(
    bus: PrivateBus, off_the_bus: trio.Event
) -> None:
    snap = snapshot(seed_dc())
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: run_stafd_dbus(
                snapshot=snap, info=dict, tron=Tron(), address=bus.address,
                backoff=FAST, task_status=task_status,
            )
        )  # fmt: skip
        await trio.to_thread.run_sync(bus.stop)
        # changed while off the bus: must never be signalled late (clients resync on return)
        snap.value = StafdSnapshot(dcs=(seed_dc(SEED[:1], device="nvme5"),), generation=2)
        with trio.fail_after(10):
            await off_the_bus.wait()  # a reconnection attempt failed: the bus was down
        await trio.to_thread.run_sync(bus.start)
        conn = await wait_for_owner(nursery, bus.address, STAFD.bus_name)
        target = DBusAddress(STAFD.object_path, STAFD.bus_name, STAFD.main_interface)
        (ctrls,) = await conn.call_checked(
            new_method_call(target, "list_controllers", "b", (False,)), timeout=10
        )
        # every signal of stafd's object: the first must be this change, not the stale one
        signals = await watch_signals(
            nursery, bus.address, sender=STAFD.bus_name, path=STAFD.object_path
        )
        snap.value = StafdSnapshot(dcs=(seed_dc(device="nvme7"),), generation=3)
        with trio.fail_after(10):
            sig = await signals.receive()
        nursery.cancel_scope.cancel()
    assert [c["device"] for c in ctrls] == ["nvme5"]  # the current snapshot is served
    assert sig.header.fields[3] == "log_pages_changed"
    assert sig.body[1] == DC.traddr and sig.body[-1] == "nvme7"  # not the stale nvme5 change


async def test_stacd_comes_back_after_the_bus_restarts(bus: PrivateBus) -> None:
    ioc = IocStatus(Tid("tcp", "::1", "4420", "nqn.io", "", "", "nqn.host"), "discovered")
    snap = AsyncValue(StacdSnapshot(iocs=(ioc,), generation=1))
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: run_stacd_dbus(
                snapshot=snap, info=dict, tron=Tron(), address=bus.address,
                backoff=FAST, task_status=task_status,
            )
        )  # fmt: skip
        await trio.to_thread.run_sync(bus.restart)
        conn = await wait_for_owner(nursery, bus.address, STACD.bus_name)
        target = DBusAddress(STACD.object_path, STACD.bus_name, STACD.main_interface)
        (ctrls,) = await conn.call_checked(
            new_method_call(target, "list_controllers", "b", (False,)), timeout=10
        )
        nursery.cancel_scope.cancel()
    assert [c["subsysnqn"] for c in ctrls] == ["nqn.io"]
