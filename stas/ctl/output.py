"""The ctl tools' output and their end: a closed pipe, Ctrl-C or a full disk is one line on
stderr and an exit code, never a traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

EXIT_FAIL = 1
EXIT_SIGPIPE = 128 + 13  # what a shell reports for a tool killed by SIGPIPE (`stafctl | head`)
EXIT_SIGINT = 128 + 2  # Ctrl-C, as the shell reports it


class OutputError(Exception):
    """Standard output cannot be written (closed, disk full): one line, exit 1."""


def write_out(text: str) -> None:
    """Print ``text`` and a newline now, so a write failure surfaces here, not at exit."""
    if sys.stdout is None:
        raise OutputError("standard output is closed")
    try:
        try:
            sys.stdout.write(text + "\n")
        except UnicodeEncodeError:  # e.g. a non-ASCII symname to an ASCII-only terminal
            enc = sys.stdout.encoding or "ascii"
            sys.stdout.write(text.encode(enc, "backslashreplace").decode(enc) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OutputError(f"cannot write the output: {exc.strerror or exc}") from None


def _quiet_stdout() -> None:
    """The reader left (``| head``): point stdout at /dev/null so the exit flush is silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, AttributeError, ValueError):  # no real stdout (tests capture it)
        pass


def guarded(prog: str, body: Callable[[], int]) -> int:
    """Run a tool's body; Ctrl-C, a closed pipe and output errors end in one line, no traceback.

    Ctrl-C exits 130 and a reader that went away 141, as the shell shows a tool killed by
    those signals; anything a tool reports itself keeps its own exit code.
    """
    try:
        rc = body()
        if sys.stdout is not None:
            sys.stdout.flush()
        return rc
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_SIGINT
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_SIGPIPE
    except OutputError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except OSError as exc:  # e.g. stacctl plan printing into a full disk
        where = f": {exc.filename}" if exc.filename else ""
        print(f"{prog}{where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAIL
