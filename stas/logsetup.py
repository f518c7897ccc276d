"""Logging for the daemons: journal-friendly with ``--syslog``, readable on a terminal otherwise.

Under systemd (``JOURNAL_STREAM`` set) lines go to stderr with sd-daemon ``<N>`` priority
prefixes, which journald turns into real priorities, with no extra dependency; elsewhere
``--syslog`` uses /dev/log with the program name as identifier. ``tron`` (config, ``--tron`` or
D-Bus) switches DEBUG on and off at run time.

Setting up logging is the first thing a daemon does, before trio is imported, so it is also
where ``defer_imports`` keeps OpenSSL out of a daemon that does not use it: trio imports
``ssl`` and ``hmac`` for its TLS and DTLS streams, which map libssl and libcrypto (about 4.5 MB
of each daemon's 29 MB RSS; liblzma and libbz2, through shutil, another 0.4 MB). They load
for real on first use (NVMe/TCP TLS, DH-HMAC-CHAP).
"""

from __future__ import annotations

import logging
import os
import sys
from types import ModuleType
from typing import Any, TextIO

# Imported at module level, used only inside functions: ssl and hmac by trio (TLS, DTLS),
# hashlib by our auth and TLS code; bz2 and lzma by shutil (archives); subprocess by trio
# (trio.run_process) and ctypes.util, tempfile by ctypes.util and our atomic file writes, idna
# by trio (non-ASCII host names): with locale, shutil and random behind them, ~5 ms and
# 0.4 MB (issue 8).
DEFERRED = ("ssl", "hmac", "hashlib", "bz2", "lzma", "subprocess", "tempfile", "idna")


def defer_imports(names: tuple[str, ...] = DEFERRED) -> list[str]:
    """Put a stand-in in ``sys.modules`` for each module not imported yet; the first
    attribute looked up on it imports the real module into the stand-in (so the names bound
    by ``import ssl`` elsewhere keep working). Returns the names deferred.

    Not ``importlib.util.LazyLoader``: under 3.11 the import statement itself reads
    ``__spec__`` of a module found in ``sys.modules``, which makes a lazy module load.
    """
    import importlib.util

    deferred = []
    for name in names:
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None:
            continue
        sys.modules[name] = _stand_in(name, spec)
        deferred.append(name)
    return deferred


def answer_pthread_lookup() -> bool:
    """trio names its worker threads with pthread_setname_np, which it looks up when imported
    with ``ctypes.util.find_library("pthread")``: that runs ``/sbin/ldconfig -p`` (a fork and
    an exec at every start, slow under emulation) and imports subprocess, tempfile and shutil.
    The library is mapped in this process already: a stand-in ``ctypes.util`` answers
    "pthread" with its path from /proc/self/maps, and hands any other name (or attribute) to
    the real module, imported then. Returns whether the stand-in was put in place."""
    import importlib.util

    if "ctypes.util" in sys.modules or not sys.platform.startswith("linux"):
        return False
    spec = importlib.util.find_spec("ctypes.util")
    if spec is None:
        return False
    import ctypes

    stub = _stand_in("ctypes.util", spec)

    def find_library(name: str) -> str | None:
        if name == "pthread":
            path = _mapped_library(("/libpthread.so", "/libc.so"))
            if path:
                return path
        real: Any = stub.__getattr__("find_library")
        return real(name)  # type: ignore[no-any-return]

    stub.find_library = find_library  # type: ignore[attr-defined]
    sys.modules["ctypes.util"] = stub
    ctypes.util = stub  # type: ignore[attr-defined]  # `import ctypes.util` binds ctypes
    return True


def _mapped_library(prefer: tuple[str, ...]) -> str | None:
    """The path of the first of ``prefer`` (``/libname.so`` parts) mapped in this process."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if ".so" in line}
    except OSError:
        return None
    for part in prefer:
        for path in sorted(paths):
            if part in path:
                return path
    return None


def _stand_in(name: str, spec: Any) -> ModuleType:
    stub = ModuleType(name)
    stub.__spec__ = spec
    stub.__file__ = spec.origin

    def __getattr__(attr: str) -> Any:  # only called for names the stub does not have yet
        if attr == "__path__" and spec.submodule_search_locations is None:
            raise AttributeError(attr)  # `from m import x` asks whether m is a package
        import importlib

        if sys.modules.get(name) is stub:
            del sys.modules[name]
        real = importlib.import_module(name)
        stub.__dict__.update(real.__dict__)
        return getattr(real, attr)

    stub.__getattr__ = __getattr__  # type: ignore[method-assign]
    return stub


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
