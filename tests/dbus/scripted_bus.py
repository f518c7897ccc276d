"""A scripted one-connection D-Bus bus in a thread, for the blocking client (stas.dbus.client)
and the ctl tools: just enough of dbus-daemon to fail on cue (hang up, or go silent) after
authenticating, where a real dbus-daemon cannot be made to.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from typing import Any

from jeepney import HeaderFields, Message, Parser, new_method_return

SILENT: Any = object()  # a reply that never comes: the bus keeps reading until the client leaves
HOLD = 10.0  # seconds the bus waits for the client at most; only reached when something is wrong

Replies = Callable[[Message], Any]  # a reply Message, None (hang up) or SILENT


def answer_hello(then: Replies) -> Replies:
    """Hello answered with a unique name; every later message by ``then``."""

    def replies(msg: Message) -> Any:
        if msg.header.fields[HeaderFields.member] == "Hello":
            return new_method_return(msg, "s", (":1.7",))
        return then(msg)

    return replies


def _received(conn: socket.socket) -> bytes:
    """The next bytes from the client; ConnectionResetError (an OSError) once it has left."""
    chunk = conn.recv(4096)
    if not chunk:
        raise ConnectionResetError("the client closed the connection")
    return chunk


def fake_bus(path: str, replies: Replies, *, auth_delay: float = 0.0) -> threading.Thread:
    """A bus at ``path`` for one connection: SASL EXTERNAL accepted (``auth_delay`` seconds
    late: a slow bus), then ``replies(msg)`` answers each message. The thread ends when the
    client closes the connection or the bus hangs up."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)
    late = threading.Event()  # never set: its wait is the bus being slow

    def serve() -> None:
        conn, _ = server.accept()
        server.close()
        with conn, contextlib.suppress(OSError):  # the client may give up at any step
            conn.settimeout(HOLD)
            data = b""
            while b"\r\n" not in data:  # "\0AUTH EXTERNAL <uid>\r\n"
                data += _received(conn)
            late.wait(auth_delay)
            conn.sendall(b"OK 0123456789abcdef0123456789abcdef\r\n")
            data = b""
            while b"BEGIN\r\n" not in data:
                data += _received(conn)
            parser = Parser()
            parser.add_data(data.split(b"BEGIN\r\n", 1)[1])
            serial = 1
            while True:
                msg = parser.get_next_message()
                if msg is None:
                    parser.add_data(_received(conn))
                    continue
                reply = replies(msg)
                if reply is None:
                    return
                if reply is not SILENT:
                    conn.sendall(reply.serialise(serial=serial))
                    serial += 1

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def within_guard(fn: Any, *args: Any, **kwargs: Any) -> BaseException | Any:
    """``fn`` in a thread, its result or exception; a test failure (not a hang) if it never
    returns, as jeepney's Hello without a time limit never did."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HOLD)
    assert outcome, f"{getattr(fn, '__name__', fn)} still waiting after {HOLD} s"
    return outcome[0]
