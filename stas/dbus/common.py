"""Exceptions, error names and bus-address resolution shared by the Trio and blocking sides.

Dependency-free on purpose so the ctl tools can import it without paying for trio.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

SYSTEM_BUS_ENV = "DBUS_SYSTEM_BUS_ADDRESS"
DEFAULT_SYSTEM_BUS = "unix:path=/run/dbus/system_bus_socket"

# Standard error names (D-Bus specification, "Message Bus Messages" / "Errors").
ERR_FAILED = "org.freedesktop.DBus.Error.Failed"
ERR_UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
ERR_UNKNOWN_INTERFACE = "org.freedesktop.DBus.Error.UnknownInterface"
ERR_UNKNOWN_OBJECT = "org.freedesktop.DBus.Error.UnknownObject"
ERR_UNKNOWN_PROPERTY = "org.freedesktop.DBus.Error.UnknownProperty"
ERR_PROPERTY_READ_ONLY = "org.freedesktop.DBus.Error.PropertyReadOnly"
ERR_INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
ERR_ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"
ERR_LIMITS_EXCEEDED = "org.freedesktop.DBus.Error.LimitsExceeded"
ERR_SERVICE_UNKNOWN = "org.freedesktop.DBus.Error.ServiceUnknown"
ERR_NAME_HAS_NO_OWNER = "org.freedesktop.DBus.Error.NameHasNoOwner"

# LimitsExceeded with this message start means "your share of calls is in use: retry soon";
# any other LimitsExceeded (a reply too large) would fail again, so clients must not retry it.
BUSY_MESSAGE = "server busy, retry"

# Replies meaning "the service is not there (any more)" rather than "your call was wrong".
UNAVAILABLE_ERRORS = frozenset(
    {
        ERR_SERVICE_UNKNOWN,
        ERR_NAME_HAS_NO_OWNER,
        "org.freedesktop.DBus.Error.NoReply",
        "org.freedesktop.DBus.Error.Disconnected",
        "org.freedesktop.DBus.Error.NoServer",
        "org.freedesktop.DBus.Error.Timeout",
        "org.freedesktop.DBus.Error.TimedOut",
    }
)


class DBusError(Exception):
    """Base of every error raised by the D-Bus layer."""


class DBusUnavailable(DBusError):
    """The bus or the service cannot be reached; callers print one line and give up."""


class DBusCallError(DBusError):
    """The service answered a call with a D-Bus error; ``name`` is the error name."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}" if message else name)
        self.name = name
        self.message = message


class DBusAccessDenied(DBusCallError):
    """The bus policy or the service refused the call (e.g. setting ``tron`` as non-root)."""


class DBusBusy(DBusCallError):
    """The service is handling as many calls from this caller as it allows; retry shortly."""


def call_error(name: str, body: tuple[object, ...]) -> DBusError:
    """Map an error reply to the matching exception (unavailable, denied, or other)."""
    message = body[0] if body and isinstance(body[0], str) else ""
    if name in UNAVAILABLE_ERRORS:
        return DBusUnavailable(f"{name}: {message}" if message else name)
    if name == ERR_ACCESS_DENIED:
        return DBusAccessDenied(name, message)
    if name == ERR_LIMITS_EXCEEDED and message.startswith(BUSY_MESSAGE):
        return DBusBusy(name, message)
    return DBusCallError(name, message)


def system_bus_address(environ: Mapping[str, str] | None = None) -> str:
    """The system bus address: ``$DBUS_SYSTEM_BUS_ADDRESS`` if set, else the standard socket."""
    env = os.environ if environ is None else environ
    return env.get(SYSTEM_BUS_ENV, "") or DEFAULT_SYSTEM_BUS
