"""systemd readiness and watchdog over ``$NOTIFY_SOCKET`` without libsystemd.

The protocol is one datagram of ``KEY=VALUE`` lines on a unix socket (a leading ``@`` means the
abstract namespace). Without ``NOTIFY_SOCKET`` every call is a no-op, so the daemons run the
same way by hand and under systemd.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

import trio

log = logging.getLogger("stas.sdnotify")


class Notifier:
    """Sends state strings to systemd's notify socket, if there is one."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        path = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + path[1:] if path.startswith("@") else path
        self._watchdog_usec = _watchdog_usec(env)

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half the timeout systemd set), or None without a watchdog."""
        return None if self._watchdog_usec is None else self._watchdog_usec / 2e6

    def notify(self, *states: str) -> bool:
        """Send e.g. ``notify("READY=1", "STATUS=running")``; True when it was delivered."""
        if not self._address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(states).encode(), self._address)
        except OSError as exc:
            log.warning("sd_notify %s failed: %s", ",".join(states), exc)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        return self.notify("RELOADING=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    async def run_watchdog(self) -> None:
        """Ping ``WATCHDOG=1`` at half the watchdog timeout, forever (no-op without one).

        It runs as an ordinary task in the daemon's main nursery, so a wedged event loop stops
        the pings and systemd restarts the daemon.
        """
        interval = self.watchdog_interval
        if interval is None or not self.enabled:
            return
        while True:
            self.notify("WATCHDOG=1")
            await trio.sleep(interval)


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    """``WATCHDOG_USEC`` when it is meant for this process (``WATCHDOG_PID`` unset or ours)."""
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec if usec > 0 else None
