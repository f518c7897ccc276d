"""A bus that goes away while we connect: ``open_bus`` says so, and stafd/stacd retry.

A dbus-daemon being restarted can accept a connection and close it during authentication or
Hello. jeepney's handshake looped forever on the first (stafd spinning, never back on the bus)
and raised a bare exception group on the second, which ``serve_on_bus`` does not retry: the
daemon exited. A scripted bus on a Unix socket plays each step deterministically.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from jeepney import HeaderFields, MessageType

from stas.dbus.common import DBusUnavailable
from stas.dbus.connection import open_bus
from stas.dbus.testbus import restartable_bus
from tests.helpers.bus_scripts import (
    Script,
    close_after_auth_line,
    close_during_hello,
    serve_attempts,
)
from tests.helpers.fixtures import need_dbus_daemon


@pytest.mark.parametrize("script", [close_after_auth_line, close_during_hello])
async def test_a_bus_closing_during_the_handshake_is_unavailable(
    scripted_bus: Callable[[Script], Awaitable[str]], script: Script
) -> None:
    address = await scripted_bus(script)
    with trio.fail_after(10):  # a guard only: the old code looped forever here (auth case)
        with pytest.raises(DBusUnavailable, match="cannot connect to the D-Bus bus at unix:"):
            await open_bus(address)


async def test_the_daemon_retries_a_bus_that_closed_during_hello(
    scripted_bus: Callable[[Script], Awaitable[str]], autojump_clock: trio.testing.MockClock
) -> None:
    """Old code: the exception group ended serve_on_bus (and stafd) at the first retry."""
    address = await scripted_bus(close_during_hello)
    attempts = await serve_attempts(address)  # the bus is restarting: it hangs up during Hello
    assert attempts == [0.0, 1.0, 2.0]  # lost, then refused during Hello, then tried again


async def test_our_name_acquired_always_reaches_the_receive_loop() -> None:
    """The Hello reply is read by the handshake, so what follows it is never lost or raced."""
    need_dbus_daemon()
    with restartable_bus() as bus:
        received = trio.Event()
        first: list[Any] = []

        def on_message(msg: Any) -> None:
            first.append(msg)
            received.set()

        conn = await open_bus(bus.address)
        async with trio.open_nursery() as nursery:
            await nursery.start(conn.serve, on_message)
            with trio.fail_after(10):
                await received.wait()
            await conn.aclose()
    msg = first[0]
    assert msg.header.message_type is MessageType.signal
    assert msg.header.fields[HeaderFields.member] == "NameAcquired"
    assert msg.body == (conn.unique_name,)
