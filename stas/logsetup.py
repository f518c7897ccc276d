"""Logging for the daemons: journal-friendly with ``--syslog``, readable on a terminal otherwise.

Under systemd (``JOURNAL_STREAM`` set) lines go to stderr with sd-daemon ``<N>`` priority
prefixes, which journald turns into real priorities, with no extra dependency; elsewhere
``--syslog`` uses /dev/log with the program name as identifier. ``tron`` (config, ``--tron`` or
D-Bus) switches DEBUG on and off at run time.

Setting up logging is the first thing a daemon does, before trio is imported, so it also
defers the modules a daemon imports but seldom uses (``stas.deferred``: OpenSSL stays unmapped
without TLS); the daemons' entry points defer them even earlier, before logging's own imports.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

from stas.deferred import answer_pthread_lookup, defer_imports

SD_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class JournalFormatter(logging.Formatter):
    """``<priority>message``: journald parses the prefix (sd-daemon(3))."""

    def format(self, record: logging.LogRecord) -> str:
        prio = SD_PRIORITY.get(record.levelno, 6)
        text = super().format(record)
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines() or [""])


class TronControl:
    """The run-time trace switch shared by config, command line and D-Bus."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger()
        self._on = False

    def get(self) -> bool:
        return self._on

    def set(self, value: bool) -> None:
        self._on = bool(value)
        self._logger.setLevel(logging.DEBUG if self._on else logging.INFO)

    def level_name(self) -> str:
        return logging.getLevelName(self._logger.getEffectiveLevel())


def setup_logging(
    prog: str, *, syslog: bool, tron: bool, stream: TextIO | None = None
) -> TronControl:
    """Configure the root logger once for a daemon; returns its trace switch. Also defers
    the modules a daemon imports but seldom uses (``defer_imports``, ``answer_pthread_lookup``):
    this runs first."""
    defer_imports()
    answer_pthread_lookup()
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler: logging.Handler
    if syslog and os.environ.get("JOURNAL_STREAM"):
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(JournalFormatter("%(message)s"))
    elif syslog and os.path.exists("/dev/log"):
        from logging.handlers import SysLogHandler  # pulls in pickle...: only for --syslog

        handler = SysLogHandler(address="/dev/log", facility=SysLogHandler.LOG_DAEMON)
        handler.setFormatter(logging.Formatter(f"{prog}[{os.getpid()}]: %(message)s"))
    else:
        handler = logging.StreamHandler(stream or sys.stdout)
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s {prog}: %(levelname)s %(message)s", "%H:%M:%S")
        )
    root.addHandler(handler)
    # zeroconf logs every unreachable interface with a traceback; its errors are enough
    logging.getLogger("zeroconf").setLevel(logging.ERROR)
    control = TronControl(root)
    control.set(tron)
    return control
