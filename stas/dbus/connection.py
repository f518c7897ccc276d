"""One Trio D-Bus connection with our own receive loop.

jeepney's Trio router silently drops messages when a filter's channel is full and has no hook
for incoming method calls; the object server needs both, so this loop matches replies to
waiting callers and hands every other message to one synchronous callback.
Sends are serialised by jeepney's connection (it holds a send lock across a whole message).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import attrs
import trio
from jeepney import HeaderFields, Message, MessageType, new_method_call
from jeepney.auth import BEGIN, Authenticator
from jeepney.bus import get_bus
from jeepney.bus_messages import message_bus
from jeepney.io.trio import DBusConnection

from stas.dbus.common import DBusUnavailable, call_error, system_bus_address

log = logging.getLogger(__name__)

MessageCallback = Callable[[Message], None]
# Seconds the bus itself may take: to let us in (authentication and Hello) and to answer one
# of its own methods (RequestName, AddMatch, ...). dbus-daemon's own reply timeout; without a
# limit, a bus that took the connection and then said nothing held a daemon forever, never
# retried. Read at each use: tests that run a daemon under an autojump clock beside a real
# dbus-daemon set it to math.inf (virtual time would run out while the real bus answers).
BUS_TIMEOUT = 25.0


@attrs.define
class _Pending:
    """A caller waiting for the reply with one serial number."""

    done: trio.Event = attrs.field(factory=trio.Event)
    reply: Message | None = None
    error: Exception | None = None


class BusConnection:
    """A connected bus: ``call`` for request/reply, ``serve`` runs the receive loop."""

    def __init__(self, conn: DBusConnection, address: str) -> None:
        self._conn = conn
        self.address = address
        self._pending: dict[int, _Pending] = {}
        self._closed_reason: str | None = None
        self._closed_locally = False

    @property
    def unique_name(self) -> str:
        return str(self._conn.unique_name)

    async def send(self, msg: Message) -> None:
        """Send one message (no reply expected or wanted)."""
        if self._closed_reason is not None:
            raise DBusUnavailable(self._closed_reason)
        try:
            await self._conn.send(msg)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise DBusUnavailable(f"D-Bus connection lost: {exc}") from exc

    async def call(self, msg: Message, *, timeout: float | None = None) -> Message:
        """Send a method call and return its reply (a method return or an error message).

        Only works while ``serve`` runs in some task. ``timeout`` expiry and a lost connection
        both raise DBusUnavailable: either way the peer cannot answer.
        """
        if self._closed_reason is not None:
            raise DBusUnavailable(self._closed_reason)
        serial = next(self._conn.outgoing_serial)
        pending = _Pending()
        self._pending[serial] = pending
        try:
            with trio.move_on_after(math.inf if timeout is None else timeout) as scope:
                try:
                    await self._conn.send(msg, serial=serial)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    raise DBusUnavailable(f"D-Bus connection lost: {exc}") from exc
                await pending.done.wait()
        finally:
            del self._pending[serial]
        if scope.cancelled_caught:
            member = msg.header.fields.get(HeaderFields.member, "?")
            raise DBusUnavailable(f"no reply to {member} within {timeout:g} s")
        if pending.error is not None:
            raise pending.error
        assert pending.reply is not None
        return pending.reply

    async def call_checked(self, msg: Message, *, timeout: float | None = None) -> tuple[Any, ...]:
        """``call``, returning the reply body or raising the mapped D-Bus error."""
        reply = await self.call(msg, timeout=timeout)
        if reply.header.message_type is MessageType.error:
            name = str(reply.header.fields.get(HeaderFields.error_name, ""))
            raise call_error(name, tuple(reply.body))
        return tuple(reply.body)

    async def bus_call(
        self,
        method: str,
        signature: str | None = None,
        *args: object,
        timeout: float | None = None,
    ) -> tuple[Any, ...]:
        """Call a method of the message bus itself (org.freedesktop.DBus); DBusUnavailable
        if the bus does not answer within ``timeout`` (default BUS_TIMEOUT) seconds."""
        msg = new_method_call(message_bus, method, signature, args)
        return await self.call_checked(msg, timeout=BUS_TIMEOUT if timeout is None else timeout)

    async def serve(
        self,
        on_message: MessageCallback,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Receive until the bus goes away; replies wake callers, the rest go to ``on_message``.

        Raises DBusUnavailable when the bus ends the connection; returns if ``aclose`` did.
        """
        task_status.started()
        reason = "D-Bus connection closed by the bus"
        try:
            while True:
                try:
                    msg = await self._conn.receive()
                except trio.EndOfChannel:
                    break
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    reason = f"D-Bus connection lost: {exc}"
                    break
                reply_to = msg.header.fields.get(HeaderFields.reply_serial)
                if reply_to is not None and msg.header.message_type in (
                    MessageType.method_return,
                    MessageType.error,
                ):
                    pending = self._pending.get(reply_to)
                    if pending is not None and not pending.done.is_set():
                        pending.reply = msg
                        pending.done.set()
                    continue
                on_message(msg)
        finally:
            self._fail_pending(reason)
        if not self._closed_locally:
            raise DBusUnavailable(reason)

    def _fail_pending(self, reason: str) -> None:
        self._closed_reason = reason
        for pending in self._pending.values():
            if not pending.done.is_set():
                pending.error = DBusUnavailable(reason)
                pending.done.set()

    async def aclose(self) -> None:
        self._closed_locally = True
        self._fail_pending("D-Bus connection closed")
        await self._conn.aclose()


async def open_bus(address: str | None = None, *, timeout: float | None = None) -> BusConnection:
    """Connect, authenticate and say Hello to ``address`` (default: the system bus).

    Raises DBusUnavailable naming the address when the bus cannot be reached, or does not
    let us in within ``timeout`` (default BUS_TIMEOUT) seconds; the daemons retry both.
    """
    addr = address or system_bus_address()
    limit = BUS_TIMEOUT if timeout is None else timeout
    try:
        with trio.move_on_after(limit) as scope:
            conn = await _handshake(addr)
        if scope.cancelled_caught:
            raise DBusUnavailable(f"the D-Bus bus at {addr} did not answer within {limit:g} s")
    except (OSError, trio.BrokenResourceError, trio.EndOfChannel) as exc:
        raise DBusUnavailable(f"cannot connect to the D-Bus bus at {addr}: {exc}") from exc
    except (RuntimeError, ValueError, KeyError) as exc:
        # Unsupported transport or malformed address, or authentication refused.
        raise DBusUnavailable(f"cannot use the D-Bus address {addr!r}: {exc}") from exc
    return BusConnection(conn, addr)


async def _handshake(address: str) -> DBusConnection:
    """Authenticate (EXTERNAL) and say Hello, raising EndOfChannel if the bus hangs up.

    Not jeepney's open_dbus_connection: a bus that closed during authentication made it
    loop forever (it feeds b"" and asks again), and one that closed during Hello raised a
    bare exception group, which ended stafd/stacd instead of being retried. The Hello reply
    is read here, so what follows it (our NameAcquired) always goes to ``serve``.
    """
    stream = await trio.open_unix_socket(get_bus(address))
    try:
        await stream.send_all(b"\0")  # Linux: the bus takes our uid from SO_PEERCRED
        auth = Authenticator(inc_null_byte=False)
        for line in auth:
            await stream.send_all(line)
            data = await stream.receive_some()
            if not data:
                raise trio.EndOfChannel("the bus closed the connection during authentication")
            auth.feed(data)
        await stream.send_all(BEGIN)
        conn = DBusConnection(stream.socket)
        serial = next(conn.outgoing_serial)
        await conn.send(message_bus.Hello(), serial=serial)
        reply = await conn.receive()
        while reply.header.fields.get(HeaderFields.reply_serial) != serial:
            reply = await conn.receive()  # nothing is sent before the reply; skip it if it is
        if reply.header.message_type is not MessageType.method_return:
            raise ValueError(f"the bus refused Hello: {reply.body}")
        conn.unique_name = reply.body[0]
        return conn
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


def unwrap_single(group: BaseExceptionGroup[Any]) -> Exception | None:
    """The lone ordinary exception inside a nursery's exception group, if that is all it holds.

    Lets our public coroutines and context managers raise a plain DBusUnavailable (or the
    caller's own error) instead of a group wrapping it; Cancelled and friends stay grouped.
    """
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(exc.exceptions)
        else:
            leaves.append(exc)
    if len(leaves) == 1 and isinstance(leaves[0], Exception):
        return leaves[0]
    return None
