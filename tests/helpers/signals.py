"""Watching D-Bus signals from a test thread (jeepney's blocking I/O): the event a test waits
on instead of sleeping. Signals from one sender arrive in order, so the next one received also
proves that nothing else was emitted before it."""

from __future__ import annotations

import contextlib
from collections import deque
from typing import Any

from jeepney import HeaderFields, MatchRule, Message, message_bus
from jeepney.io.blocking import DBusConnection, Proxy, open_dbus_connection

from tests.helpers.e2e import DEADLINE


class SignalWatch:
    """Signals matching ``interface`` (and ``member``) on the bus at ``address``, subscribed
    on entering, so whatever the test does inside the ``with`` is seen."""

    def __init__(self, address: str, interface: str, member: str | None = None) -> None:
        self.address = address
        self.rule = MatchRule(type="signal", interface=interface, member=member)
        self._stack = contextlib.ExitStack()
        self._conn: DBusConnection | None = None
        self._queue: deque[Message] = deque()

    def __enter__(self) -> SignalWatch:
        self._conn = self._stack.enter_context(open_dbus_connection(bus=self.address))
        self._queue = self._stack.enter_context(self._conn.filter(self.rule))
        Proxy(message_bus, self._conn).AddMatch(self.rule)  # answered: the match is in place
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def next(self, timeout: float = DEADLINE) -> Message:
        assert self._conn is not None, "use SignalWatch in a with statement"
        try:
            return self._conn.recv_until_filtered(self._queue, timeout=timeout)
        except TimeoutError:
            rule = self.rule.serialise()
            raise AssertionError(f"no signal matching {rule} in {timeout} s") from None

    def next_body(self, timeout: float = DEADLINE) -> tuple[Any, ...]:
        return tuple(self.next(timeout).body)

    @staticmethod
    def member(msg: Message) -> str:
        return str(msg.header.fields.get(HeaderFields.member, ""))
