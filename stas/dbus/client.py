"""Blocking D-Bus client for stafctl/stacctl: connect, call, get/set properties.

The ctl tools run once and exit, so this stays synchronous and import-light (jeepney's
blocking I/O and our idl; never trio). Every way of "the daemon is not there" becomes
DBusUnavailable so a tool can print one line and exit 1. A daemon that is busy with this
user's other calls (LimitsExceeded "server busy") is asked again a few times, about 2 s in all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from jeepney import DBusAddress, HeaderFields, MessageType, new_method_call
from jeepney.bus import get_bus
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import DBusConnection, prep_socket

from stas.dbus.common import (
    DBusAccessDenied,
    DBusBusy,
    DBusCallError,
    DBusError,
    DBusUnavailable,
    call_error,
    system_bus_address,
)
from stas.dbus.idl import Service

__all__ = [
    "BusNotAnswering",
    "DBusAccessDenied",
    "DBusBusy",
    "DBusCallError",
    "DBusError",
    "DBusUnavailable",
    "NoSystemBus",
    "ServiceClient",
    "call",
    "connect",
    "get_property",
    "name_has_owner",
    "open_system_bus",
    "set_property",
]

DEFAULT_TIMEOUT = 25.0  # seconds; dbus-daemon's own default reply timeout
PROPERTIES = "org.freedesktop.DBus.Properties"
BUSY_RETRY_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.6, 0.65)  # seconds between tries: 2 s in all
_sleep: Callable[[float], None] = time.sleep  # replaced by tests: no real waiting there


class NoSystemBus(DBusUnavailable):
    """The bus itself cannot be reached or its address is unusable (not just the daemon
    missing); ``address`` is the one tried, ``__cause__`` the OSError or parse error."""

    def __init__(self, address: str, message: str) -> None:
        super().__init__(message)
        self.address = address


class BusNotAnswering(NoSystemBus):
    """The bus took the connection but did not authenticate us, answer Hello or answer the
    first call within ``timeout`` seconds (a stuck dbus-daemon, or not a bus at all)."""

    def __init__(self, address: str, timeout: float) -> None:
        super().__init__(
            address, f"the system bus at {address} did not answer within {timeout:g} s"
        )
        self.timeout = timeout


class _Connection(DBusConnection):  # type: ignore[misc]  # jeepney is untyped
    """jeepney's blocking connection, whose constructor says Hello with no time limit: here
    every reply waited for before ``deadline`` is cleared (``time.monotonic()``) is waited for
    until then at most, Hello included. If the constructor fails, its socket and selector are
    closed here rather than left to the garbage collector."""

    def __init__(self, sock: Any, deadline: float | None = None) -> None:
        self.deadline = deadline
        try:
            super().__init__(sock)
        except BaseException:
            selector = getattr(self, "selector", None)
            if selector is not None:
                selector.close()
            sock.close()
            raise

    def send_and_get_reply(self, message: Any, *, timeout: float | None = None) -> Any:
        if self.deadline is not None:
            left = max(self.deadline - time.monotonic(), 0.0)
            timeout = left if timeout is None else min(timeout, left)
        return super().send_and_get_reply(message, timeout=timeout)


def open_system_bus(address: str | None = None, *, timeout: float = 2.0) -> DBusConnection:
    """Connect to the system bus (``$DBUS_SYSTEM_BUS_ADDRESS`` honoured) or to ``address``,
    authentication and Hello within ``timeout`` seconds in all; NoSystemBus (BusNotAnswering
    for the time limit) if that fails, with nothing left open."""
    conn = _open(address or system_bus_address(), timeout)
    conn.deadline = None  # connected: each call has its own time limit from now on
    return conn


def _open(addr: str, timeout: float) -> _Connection:
    """``open_system_bus``, the returned connection still under the connect's deadline."""
    deadline = time.monotonic() + timeout
    try:
        return _Connection(prep_socket(get_bus(addr), timeout=timeout), deadline)
    except (TimeoutError, BlockingIOError) as exc:  # before OSError: they are ones
        # EAGAIN: jeepney's auth step started after the deadline (its socket timeout was 0)
        raise BusNotAnswering(addr, timeout) from exc
    except OSError as exc:
        raise NoSystemBus(addr, f"cannot connect to the D-Bus bus at {addr}: {exc}") from exc
    except (RuntimeError, ValueError, KeyError, StopIteration) as exc:
        raise NoSystemBus(addr, f"cannot use the D-Bus address {addr!r}: {exc}") from exc


def call(
    conn: DBusConnection,
    bus_name: str,
    path: str,
    interface: str,
    method: str,
    signature: str = "",
    *args: Any,
    timeout: float | None = DEFAULT_TIMEOUT,
    busy_delays: Sequence[float] = BUSY_RETRY_DELAYS,
) -> tuple[Any, ...]:
    """Call a method and return the reply body; D-Bus errors become our exceptions.

    "Server busy" is retried after each of ``busy_delays``; then DBusBusy is raised.
    """
    target = DBusAddress(path, bus_name=bus_name, interface=interface)
    msg = new_method_call(target, method, signature or None, tuple(args))
    for delay in busy_delays:
        try:
            return _call_once(conn, msg, bus_name, method, timeout)
        except DBusBusy:
            _sleep(delay)
    try:
        return _call_once(conn, msg, bus_name, method, timeout)
    except DBusBusy as exc:
        waited = sum(busy_delays)
        raise DBusBusy(exc.name, f"still busy after {waited:.1f} s") from None


def _call_once(
    conn: DBusConnection, msg: Any, bus_name: str, method: str, timeout: float | None
) -> tuple[Any, ...]:
    try:
        reply = conn.send_and_get_reply(msg, timeout=timeout)
    except TimeoutError as exc:
        raise DBusUnavailable(f"{bus_name} did not answer {method} within {timeout} s") from exc
    except OSError as exc:
        raise DBusUnavailable(f"D-Bus connection lost: {exc}") from exc
    if reply.header.message_type is MessageType.error:
        name = str(reply.header.fields.get(HeaderFields.error_name, ""))
        raise call_error(name, tuple(reply.body))
    return tuple(reply.body)


def get_property(
    conn: DBusConnection,
    bus_name: str,
    path: str,
    interface: str,
    name: str,
    *,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> Any:
    """Read one property's value (the variant unwrapped)."""
    body = call(conn, bus_name, path, PROPERTIES, "Get", "ss", interface, name, timeout=timeout)
    _signature, value = body[0]
    return value


def set_property(
    conn: DBusConnection,
    bus_name: str,
    path: str,
    interface: str,
    name: str,
    signature: str,
    value: Any,
    *,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> None:
    """Write one property; non-root callers get DBusAccessDenied."""
    args = (interface, name, (signature, value))
    call(conn, bus_name, path, PROPERTIES, "Set", "ssv", *args, timeout=timeout)


def name_has_owner(conn: DBusConnection, bus_name: str) -> bool:
    """Whether some process currently owns ``bus_name``."""
    msg = new_method_call(message_bus, "NameHasOwner", "s", (bus_name,))
    reply = conn.send_and_get_reply(msg, timeout=DEFAULT_TIMEOUT)
    if reply.header.message_type is MessageType.error:
        name = str(reply.header.fields.get(HeaderFields.error_name, ""))
        raise call_error(name, tuple(reply.body))
    return bool(reply.body and reply.body[0])


class ServiceClient:
    """Calls into one daemon by member name, with signatures taken from the idl."""

    def __init__(
        self, conn: DBusConnection, service: Service, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> None:
        self.conn = conn
        self.service = service
        self.timeout = timeout

    def call(self, method: str, *args: Any) -> tuple[Any, ...]:
        iface, definition = self.service.find_method(method)
        return call(
            self.conn,
            self.service.bus_name,
            self.service.object_path,
            iface.name,
            method,
            definition.in_signature,
            *args,
            timeout=self.timeout,
        )

    def get(self, prop: str) -> Any:
        s = self.service
        return get_property(
            self.conn, s.bus_name, s.object_path, s.debug_interface, prop, timeout=self.timeout
        )

    def set(self, prop: str, value: Any) -> None:
        s = self.service
        definition = s.interface(s.debug_interface).property(prop)
        if definition is None:
            raise KeyError(f"{s.debug_interface} has no property {prop!r}")
        set_property(
            self.conn,
            s.bus_name,
            s.object_path,
            s.debug_interface,
            prop,
            definition.signature,
            value,
            timeout=self.timeout,
        )

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(
    service: Service, *, address: str | None = None, timeout: float | None = DEFAULT_TIMEOUT
) -> ServiceClient:
    """Open the bus and check that ``service`` is running: NoSystemBus without a usable bus,
    BusNotAnswering if the bus does not authenticate, say Hello and answer NameHasOwner
    within ``timeout`` in all, DBusUnavailable without the daemon; the connection is closed
    on every failure.

    Checking the owner first turns "not running" into one clear error before any command
    output is produced.
    """
    addr = address or system_bus_address()
    limit = DEFAULT_TIMEOUT if timeout is None else timeout
    conn = _open(addr, limit)
    try:
        running = name_has_owner(conn, service.bus_name)
    except TimeoutError as exc:
        conn.close()
        raise BusNotAnswering(addr, limit) from exc
    except OSError as exc:
        conn.close()
        raise DBusUnavailable(f"D-Bus connection lost: {exc}") from exc
    except BaseException:  # e.g. the bus policy refusing NameHasOwner: DBusAccessDenied
        conn.close()
        raise
    conn.deadline = None  # connected: each call has its own ``timeout`` from now on
    if not running:
        conn.close()
        raise DBusUnavailable(f"{service.bus_name} is not running (name not owned)")
    return ServiceClient(conn, service, timeout=timeout)
