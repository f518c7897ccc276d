"""What stafctl and stacctl share: output formats, the D-Bus failure line, exit codes.

Kept light on imports: the ctl tools must start fast (upstream's took 1.6 s, mostly imports).
Every way a run can end (a D-Bus failure, a closed pipe, Ctrl-C, a bad argument) ends in one
line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import stat
import sys
from collections.abc import Callable
from typing import Any

EXIT_OK, EXIT_FAIL = 0, 1
EXIT_SIGPIPE = 128 + 13  # what a shell reports for a tool killed by SIGPIPE (`stafctl | head`)
EXIT_SIGINT = 128 + 2  # Ctrl-C, as the shell reports it
DEFAULT_SYS_CONF = "/etc/stas/sys.conf"
DEFAULT_HOSTNQN_FILE = "/etc/nvme/hostnqn"
CALL_TIMEOUT = 25.0  # seconds a call may take (dbus-daemon's own reply timeout)


def emit(obj: Any, *, as_json: bool) -> None:
    """Upstream's output (pprint, width 120), or JSON with --json."""
    if as_json:
        write_out(json.dumps(obj, indent=2, sort_keys=True))
    else:
        import pprint  # pulls in dataclasses/inspect: only paid for when printing

        write_out(pprint.pformat(obj, width=120))


def _open_regular(path: str) -> Any:
    """A text file, regular files only: a FIFO at a config path must not hang the tool."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file")
    return open(fd, encoding="utf-8")  # the caller's with-block closes it


def _first_word(path: str) -> str:
    try:
        with _open_regular(path) as f:
            words = f.readline().split()
    except (OSError, UnicodeDecodeError):
        return ""
    return words[0] if words else ""


def host_nqn_default() -> str:
    """sys.conf's [Host] nqn (file:// followed), or '' when it cannot be read: never an error."""
    conf = os.environ.get("STAS_SYS_CONF", DEFAULT_SYS_CONF)
    value = "file://" + DEFAULT_HOSTNQN_FILE
    try:
        with _open_regular(conf) as f:
            section = ""
            for raw in f:
                line = raw.strip()
                if line.startswith("[") and line.endswith("]"):
                    section = line[1:-1]
                elif section == "Host" and "=" in line and not line.startswith(("#", ";")):
                    key, _, val = line.partition("=")
                    if key.strip().lower() == "nqn":
                        value = val.split(" #", 1)[0].strip()
    except (OSError, UnicodeDecodeError):
        pass
    return _first_word(value[len("file://") :]) if value.startswith("file://") else value


def shown(text: str) -> str:
    """``text`` quoted for an error line: bytes that are not UTF-8 shown as ``\\xff``."""
    raw = os.fsencode(text)
    try:
        return repr(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return "'" + raw.decode("utf-8", "backslashreplace") + "'"


def tid_field(what: str, max_bytes: int, *, empty: bool = True) -> Callable[[str], str]:
    """An argparse type for one TID string sent to a daemon: the error names the bad value.

    Non-UTF-8 bytes, control characters and whitespace can name no controller (and non-UTF-8
    cannot even be sent over D-Bus); the length caps are the NVMe fields' sizes.
    """

    def check(text: str) -> str:
        raw = os.fsencode(text)
        if not text and not empty:
            raise argparse.ArgumentTypeError(f"{what} must not be empty")
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise argparse.ArgumentTypeError(f"{shown(text)} is not UTF-8 text") from None
        if any(c.isspace() or not c.isprintable() for c in text):
            raise argparse.ArgumentTypeError(
                f"{shown(text)}: a {what} has no spaces or control characters"
            )
        if len(raw) > max_bytes:
            raise argparse.ArgumentTypeError(
                f"{shown(text[:24])}... is {len(raw)} bytes long; a {what} has at most {max_bytes}"
            )
        return text

    return check


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
    cause = exc.__cause__
    if isinstance(exc, NoSystemBus):
        prefix = f"Unable to communicate with {daemon} over D-Bus:"
        env = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
        if not isinstance(cause, OSError):
            return (
                f"{prefix} {exc.address!r} is not a usable D-Bus address (DBUS_SYSTEM_BUS_ADDRESS)"
            )
        where = "from DBUS_SYSTEM_BUS_ADDRESS" if env else "the default"
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


class NoSystemBus(Exception):
    """The system bus itself cannot be reached (not just the daemon)."""

    def __init__(self, address: str, message: str) -> None:
        super().__init__(message)
        self.address = address


def connect(service: Any) -> Any:
    """``stas.dbus.client.connect``, telling "no bus at all" apart from "daemon not running"."""
    from stas.dbus import client
    from stas.dbus.common import system_bus_address

    address = system_bus_address()
    try:
        conn = client.open_system_bus(address)
    except client.DBusUnavailable as exc:
        raise NoSystemBus(address, str(exc)) from exc.__cause__
    try:
        if not client.name_has_owner(conn, service.bus_name):
            raise client.DBusUnavailable(f"{service.bus_name} is not running (name not owned)")
    except (OSError, TimeoutError) as exc:
        conn.close()
        raise client.DBusUnavailable(f"D-Bus connection lost: {exc}") from exc
    except client.DBusError:
        conn.close()
        raise
    return client.ServiceClient(conn, service, timeout=CALL_TIMEOUT)


def run_dbus(daemon: str, action: Callable[[], int], what: str = "") -> int:
    """Run a D-Bus action; turn bus failures into one line on stderr, exit 1."""
    from stas.dbus.common import DBusAccessDenied, DBusBusy, DBusCallError, DBusUnavailable

    try:
        return action()
    except (DBusUnavailable, NoSystemBus) as exc:
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


def version_line() -> str:
    from stas import __version__

    return f"nvme-stas {__version__}"


JSON_HELP = "machine-readable JSON output instead of upstream's pprint format"


def add_command(sub: Any, name: str, help: str) -> argparse.ArgumentParser:
    """A command that also takes ``--json`` after its name (``stafctl ls --json``)."""
    cmd: argparse.ArgumentParser = sub.add_parser(name, help=help)
    cmd.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=JSON_HELP)
    return cmd


def base_parser(prog: str, description: str) -> tuple[argparse.ArgumentParser, Any]:
    """The options and commands both ctl tools have; returns (parser, subparsers)."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("-v", "--version", action="store_true", help="print version and exit")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    sub = p.add_subparsers(dest="cmd", title="commands")
    add_command(sub, "tron", "trace on")
    add_command(sub, "troff", "trace off")
    add_command(sub, "status", f"show {prog[:4]}d status")
    ls = add_command(sub, "ls", "list controllers")
    ls.add_argument("-d", "--detailed", action="store_true", help="show details")
    return p, sub


def set_tron(client: Any, cmd: str, *, as_json: bool = False) -> int:
    """``tron``/``troff``: set the property, print it read back (upstream's output; with
    --json an object, so a JSON reader is not handed upstream's text)."""
    client.set("tron", cmd == "tron")
    value = bool(client.get("tron"))
    write_out(json.dumps({"tron": value}) if as_json else f"tron = {value}")
    return EXIT_OK


def run_main(
    parser: argparse.ArgumentParser,
    argv: Any,
    daemon: str,
    commands: Callable[[argparse.Namespace], int],
    local: Callable[[argparse.Namespace], int | None] = lambda args: None,
) -> int:
    """Version, usage without a command, local commands, else the D-Bus commands."""

    def body() -> int:
        args = parser.parse_args(argv)
        if args.version:
            write_out(version_line())
            return EXIT_OK
        if not args.cmd:
            write_out(parser.format_usage().rstrip("\n"))
            return EXIT_FAIL
        rc = local(args)
        if rc is not None:
            return rc
        return run_dbus(daemon, lambda: commands(args), f"{parser.prog} {args.cmd}")

    return guarded(parser.prog, body)


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
