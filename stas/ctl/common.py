"""What stafctl and stacctl share: output formats, the D-Bus failure line, exit codes.

Kept light on imports: the ctl tools must start fast (upstream's took 1.6 s, mostly imports).
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from collections.abc import Callable
from typing import Any

EXIT_OK, EXIT_FAIL = 0, 1
DEFAULT_SYS_CONF = "/etc/stas/sys.conf"
DEFAULT_HOSTNQN_FILE = "/etc/nvme/hostnqn"


def emit(obj: Any, *, as_json: bool) -> None:
    """Upstream's output (pprint, width 120), or JSON with --json."""
    if as_json:
        print(json.dumps(obj, indent=2, sort_keys=True))
    else:
        import pprint  # pulls in dataclasses/inspect: only paid for when printing

        print(pprint.pformat(obj, width=120))


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


def run_dbus(daemon: str, action: Callable[[], int]) -> int:
    """Run a D-Bus action; turn bus failures into upstream's one line on stderr, exit 1."""
    from stas.dbus.common import DBusAccessDenied, DBusBusy, DBusCallError, DBusUnavailable

    try:
        return action()
    except DBusUnavailable:
        print(f"Unable to communicate with {daemon} over D-Bus. Is {daemon} running?",
              file=sys.stderr)  # fmt: skip
    except DBusAccessDenied as exc:
        why = exc.message or exc.name
        hint = "" if "root" in why else " (only root may do this)"
        print(f"{daemon}: permission denied: {why}{hint}", file=sys.stderr)
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


def set_tron(client: Any, cmd: str) -> int:
    """``tron``/``troff``: set the property, print it read back (upstream's output)."""
    client.set("tron", cmd == "tron")
    print(f"tron = {client.get('tron')}")
    return EXIT_OK


def run_main(
    parser: argparse.ArgumentParser,
    argv: Any,
    daemon: str,
    commands: Callable[[argparse.Namespace], int],
    local: Callable[[argparse.Namespace], int | None] = lambda args: None,
) -> int:
    """Version, usage without a command, local commands, else the D-Bus commands."""
    args = parser.parse_args(argv)
    if args.version:
        print(version_line())
        return EXIT_OK
    if not args.cmd:
        parser.print_usage(sys.stdout)
        return EXIT_FAIL
    rc = local(args)
    if rc is not None:
        return rc
    return run_dbus(daemon, lambda: commands(args))
