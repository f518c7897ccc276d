"""The ctl tools' D-Bus side: connect to a daemon, and say in one line why a call failed.

Upstream's line ("Unable to communicate with stafd over D-Bus. Is stafd running?") is kept for
a daemon that is not there; the other failures (no bus at all, a daemon stuck or gone mid-call,
the bus policy's refusal) are said as what they are, with what to do.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from typing import Any

from stas.ctl.output import EXIT_FAIL

CALL_TIMEOUT = 25.0  # seconds a call may take (dbus-daemon's own reply timeout)


_REJECTED = re.compile(r'interface="([^"]*)" member="([^"]*)"')


def _denied_line(daemon: str, what: str, why: str) -> str:
    """dbus-daemon's policy refusal is a long dump of its rules: say what was refused instead."""
    found = _REJECTED.search(why)
    if found is None:  # the daemon's own refusal: its message says why
        hint = "" if "root" in why else " (only root may do this)"
        return f"{daemon}: permission denied: {why}{hint}"
    iface, member = found.groups()
    call = f"{iface}.{member}"
    if member == "Set" and iface.endswith(".Properties"):
        call = "changing a property"
    return (
        f"{what}: permission denied: the D-Bus policy allows {call} for root only;"
        f" run it as root (sudo {what})"
    )


def _unavailable_line(daemon: str, exc: Exception) -> str:
    """Upstream's line when the daemon is not there; the bus or a hung daemon said as such."""
    from stas.dbus.client import BusNotAnswering, NoSystemBus  # loaded: exc came through it

    cause = exc.__cause__
    if isinstance(exc, NoSystemBus):
        prefix = f"Unable to communicate with {daemon} over D-Bus:"
        env = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
        where = "from DBUS_SYSTEM_BUS_ADDRESS" if env else "the default"
        if isinstance(exc, BusNotAnswering):
            return (
                f"{prefix} the system bus at {exc.address} did not answer within"
                f" {exc.timeout:g} s ({where}). Is dbus-daemon stuck? (systemctl status dbus)"
            )
        if not isinstance(cause, OSError):
            return (
                f"{prefix} {exc.address!r} is not a usable D-Bus address (DBUS_SYSTEM_BUS_ADDRESS)"
            )
        return (
            f"{prefix} no system bus at {exc.address} ({where}):"
            f" {cause.strerror or cause}. Is dbus running?"
        )
    if "disconnected" in str(exc):  # dbus-daemon's NoReply when the owner left mid-call
        return (
            f"Unable to communicate with {daemon} over D-Bus: {daemon} exited before answering"
            " (stopped or restarting?); try again"
        )
    if isinstance(cause, TimeoutError) or "NoReply" in str(exc):
        return (
            f"Unable to communicate with {daemon} over D-Bus: {daemon} is running but did not"
            f" answer ({exc}). Is it stuck? See its log (journalctl -u {daemon})"
        )
    return f"Unable to communicate with {daemon} over D-Bus. Is {daemon} running?"


def connect(service: Any) -> Any:
    """``stas.dbus.client.connect`` with the tools' call timeout."""
    from stas.dbus import client

    return client.connect(service, timeout=CALL_TIMEOUT)


def run_dbus(daemon: str, action: Callable[[], int], what: str = "") -> int:
    """Run a D-Bus action; turn bus failures into one line on stderr, exit 1."""
    from stas.dbus.common import DBusAccessDenied, DBusBusy, DBusCallError, DBusUnavailable

    try:
        return action()
    except DBusUnavailable as exc:
        print(_unavailable_line(daemon, exc), file=sys.stderr)
    except DBusAccessDenied as exc:
        print(_denied_line(daemon, what or daemon[:4] + "ctl", exc.message or exc.name),
              file=sys.stderr)  # fmt: skip
    except DBusBusy as exc:
        print(f"{daemon} is busy with other calls from this user: {exc.message}; try again later",
              file=sys.stderr)  # fmt: skip
    except DBusCallError as exc:
        print(f"{daemon}: {exc}", file=sys.stderr)
    return EXIT_FAIL
