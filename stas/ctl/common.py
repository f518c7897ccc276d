"""What stafctl and stacctl share: output formats, the D-Bus failure line, exit codes.

Kept light on imports: the ctl tools must start fast (upstream's took 1.6 s, mostly imports).
Every way a run can end (a D-Bus failure, a closed pipe, Ctrl-C, a bad argument) ends in one
line on stderr and a non-zero exit, never a traceback (stas.ctl.bus, stas.ctl.output).
"""

from __future__ import annotations

import argparse
import json
import os
import stat
from collections.abc import Callable
from typing import Any

from stas.ctl.bus import connect as connect  # re-exported: the tools' one way onto the bus
from stas.ctl.bus import run_dbus
from stas.ctl.output import EXIT_FAIL as EXIT_FAIL  # re-exported with EXIT_OK
from stas.ctl.output import guarded, write_out

EXIT_OK = 0
DEFAULT_SYS_CONF = "/etc/stas/sys.conf"
DEFAULT_HOSTNQN_FILE = "/etc/nvme/hostnqn"


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
