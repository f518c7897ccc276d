"""A bus that plays a script on each connection, the scripts the handshake and timeout tests
share, and the retry loop both drive (serve_on_bus against such a bus)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trio

from stas.actors.daemon_dbus import Backoff, serve_on_bus
from stas.dbus.common import DBusUnavailable
from stas.dbus.connection import open_bus

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


async def serve_attempts(address: str) -> list[float]:
    """When serve_on_bus (stafd/stacd, backoff 1 s) started its first three tries: the first
    is lost at once, the later ones open ``address`` and must fail there to be retried."""
    attempts: list[float] = []
    third = trio.Event()

    class Scripted:
        bus_name = "org.example.scripted"

        async def run(self, *, task_status: trio.TaskStatus[None]) -> None:
            attempts.append(trio.current_time())
            if len(attempts) == 3:
                third.set()
            if len(attempts) == 1:
                task_status.started()
                raise DBusUnavailable("D-Bus connection closed by the bus")
            await open_bus(address)
            raise AssertionError("the scripted bus let the connect through")

    async with trio.open_nursery() as nursery:
        once = Backoff(initial=1, maximum=1)
        await nursery.start(
            lambda task_status: serve_on_bus(Scripted(), backoff=once, task_status=task_status)
        )
        await third.wait()
        nursery.cancel_scope.cancel()
    return attempts
