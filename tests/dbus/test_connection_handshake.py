"""A bus that goes away while we connect: ``open_bus`` says so, and stafd/stacd retry.

A dbus-daemon being restarted can accept a connection and close it during authentication or
Hello. jeepney's handshake looped forever on the first (stafd spinning, never back on the bus)
and raised a bare exception group on the second, which ``serve_on_bus`` does not retry: the
daemon exited. A scripted bus on a Unix socket plays each step deterministically.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from jeepney import HeaderFields, MessageType

from stas.actors.daemon_dbus import Backoff, serve_on_bus
from stas.dbus.common import DBusUnavailable
from stas.dbus.connection import open_bus
from stas.dbus.testbus import restartable_bus
from tests.helpers.fixtures import need_dbus_daemon

Script = Callable[[trio.SocketStream], Awaitable[None]]


async def read_until(stream: trio.SocketStream, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = await stream.receive_some()
        if not chunk:
            break  # the client gave up (cancelled): nothing more to play
        data += chunk
    return data


async def close_after_auth_line(stream: trio.SocketStream) -> None:
    data = await read_until(stream, b"AUTH EXTERNAL")
    if not data.endswith(b"\r\n"):
        await read_until(stream, b"\r\n")


async def close_during_hello(stream: trio.SocketStream) -> None:
    await close_after_auth_line(stream)
    await stream.send_all(b"OK 0123456789abcdef0123456789abcdef\r\n")
    await read_until(stream, b"Hello")  # BEGIN and the Hello call


@pytest.fixture
async def scripted_bus(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Callable[..., str]]:
    """``start(script)``: a bus address whose every connection runs ``script``, then closed."""

    async def start(script: Script) -> str:
        path = tmp_path / "bus"
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        await sock.bind(str(path))
        sock.listen(8)

        async def one(stream: trio.SocketStream) -> None:
            # the client may give up first (cancelled at the end of a test)
            async with stream:
                with contextlib.suppress(trio.BrokenResourceError):
                    await script(stream)

        nursery.start_soon(trio.serve_listeners, one, [trio.SocketListener(sock)])
        return f"unix:path={path}"

    yield start


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
    attempts: list[float] = []
    third = trio.Event()

    class LostOnce:
        bus_name = "org.example.lost"

        async def run(self, *, task_status: trio.TaskStatus[None]) -> None:
            attempts.append(trio.current_time())
            if len(attempts) == 3:
                third.set()
            if len(attempts) == 1:
                task_status.started()
                raise DBusUnavailable("D-Bus connection closed by the bus")
            await open_bus(address)  # the bus is restarting: it hangs up during Hello
            raise AssertionError("the scripted bus never completes Hello")

    async with trio.open_nursery() as nursery:
        once = Backoff(initial=1, maximum=1)
        await nursery.start(
            lambda task_status: serve_on_bus(LostOnce(), backoff=once, task_status=task_status)
        )
        await third.wait()
        nursery.cancel_scope.cancel()
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
