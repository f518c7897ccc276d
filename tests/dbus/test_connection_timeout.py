"""A bus that takes the connection and then says nothing: stafd/stacd give up on it within
BUS_TIMEOUT and retry, where they waited for its Hello (or RequestName) forever.

The scripted bus and its scripts are test_connection_handshake's; the clock is Trio's
MockClock, so the 25 s limits cost no real time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
from jeepney import HeaderFields, Parser, new_method_return

from stas.dbus.common import DBusUnavailable
from stas.dbus.connection import BUS_TIMEOUT, open_bus
from tests.helpers.bus_scripts import (
    Script,
    close_after_auth_line,
    read_until,
    serve_attempts,
)

GUARD = 10 * BUS_TIMEOUT  # virtual seconds; only reached when the connect never gives up


async def silent_in_authentication(stream: trio.SocketStream) -> None:
    await close_after_auth_line(stream)
    await read_until(stream, b"never sent")


async def silent_after_authentication(stream: trio.SocketStream) -> None:
    await close_after_auth_line(stream)
    await stream.send_all(b"OK 0123456789abcdef0123456789abcdef\r\n")
    await read_until(stream, b"never sent")  # BEGIN, Hello, and nothing in return


async def hello_then_silent(stream: trio.SocketStream) -> None:
    """Hello answered; every later call (RequestName, AddMatch...) never is."""
    await close_after_auth_line(stream)
    await stream.send_all(b"OK 0123456789abcdef0123456789abcdef\r\n")
    data = await read_until(stream, b"Hello")
    parser = Parser()
    parser.add_data(data.split(b"BEGIN\r\n", 1)[1])
    while (hello := parser.get_next_message()) is None:
        parser.add_data(await stream.receive_some())
    assert hello.header.fields[HeaderFields.member] == "Hello"
    await stream.send_all(new_method_return(hello, "s", (":1.7",)).serialise(serial=1))
    await read_until(stream, b"never sent")


@pytest.mark.parametrize("script", [silent_in_authentication, silent_after_authentication])
async def test_a_silent_bus_is_given_up_on(
    scripted_bus: Callable[[Script], Awaitable[str]],
    autojump_clock: trio.testing.MockClock,
    script: Script,
) -> None:
    """Old code: open_bus waited for the Hello reply (or the auth answer) forever."""
    address = await scripted_bus(script)
    with trio.fail_after(GUARD):
        with pytest.raises(DBusUnavailable) as err:
            await open_bus(address)
    assert str(err.value) == f"the D-Bus bus at {address} did not answer within 25 s"
    assert trio.current_time() == pytest.approx(BUS_TIMEOUT)


async def test_a_bus_silent_after_hello_fails_the_bus_call(
    scripted_bus: Callable[[Script], Awaitable[str]],
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RequestName (stafd/stacd taking their name) and AddMatch waited forever as well."""
    address = await scripted_bus(hello_then_silent)
    bus = await open_bus(address)
    assert bus.unique_name == ":1.7"
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve, lambda msg: None)
        with trio.fail_after(GUARD):
            with pytest.raises(DBusUnavailable, match="no reply to RequestName within 25 s"):
                await bus.bus_call("RequestName", "su", "org.example.x", 4)
        assert trio.current_time() == pytest.approx(BUS_TIMEOUT)
        await bus.aclose()


async def test_the_daemon_retries_a_bus_that_never_answers_hello(
    scripted_bus: Callable[[Script], Awaitable[str]],
    autojump_clock: trio.testing.MockClock,
) -> None:
    """serve_on_bus (stafd/stacd) gets DBusUnavailable after BUS_TIMEOUT and tries again."""
    address = await scripted_bus(silent_after_authentication)
    with trio.fail_after(GUARD):
        attempts = await serve_attempts(address)  # let in, then Hello never answered
    assert attempts == [0.0, 1.0, 1.0 + BUS_TIMEOUT + 1.0]
