"""stasadm: create the host NQN and ID, and set or clear the host symbolic name (upstream §4.3).

Same commands, options and derivation as upstream (``stas.config.identity``), so hosts keep
their identity when they move from upstream to us. Differences: sys.conf keeps its comments
when it is rewritten, ``-f FILE`` is stored as an absolute ``file://`` path, and without root
and without a usable /etc/machine-id ``hostnqn`` falls back to a random UUID instead of exiting.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

from stas import __version__
from stas.config.identity import (  # noqa: F401  (re-exported: stasadm's derivation)
    NQN_PREFIX,
    NVME_APP_ID,
    derive_host_uuid,
    dmi_uuid,
    machine_app_specific_uuid,
)

DEFAULT_SYS_CONF = "/etc/stas/sys.conf"


class StasadmError(Exception):
    """A user-facing failure: printed as one line, exit 1."""


def _write_value_file(path: str, value: str) -> None:
    """Write ``value`` to ``path`` atomically (temp file, fsync, rename)."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(value + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise StasadmError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _set(conf: str, key: str, value: str | None) -> None:
    from stas.config import ConfigError, set_sys_option

    try:
        set_sys_option(conf, key, value)
    except ConfigError as exc:
        raise StasadmError(str(exc)) from exc


def _check(key: str, value: str, *, in_file: bool = False) -> None:
    """StasadmError unless sys.conf (or with ``in_file`` a ``-f`` file, read back as its first
    word only) can hold ``value`` for ``key``."""
    from stas.config import ConfigError
    from stas.config.sysconf import check_file_value, check_sys_value

    try:
        (check_file_value if in_file else check_sys_value)(key, value)
    except ConfigError as exc:
        raise StasadmError(str(exc)) from exc


def save(conf: str, key: str, value: str, file: str | None) -> None:
    """Store ``value`` in sys.conf directly, or in ``file`` with ``key=file://FILE`` there.

    Everything is checked before anything is written: no value file is left behind for a
    sys.conf entry that cannot be made.
    """
    if file:
        _check(key, value, in_file=True)  # only what sys.conf takes and the file reads back
        target = os.path.abspath(file)
        try:
            _check(key, f"file://{target}")
        except StasadmError:
            from stas.ctl.common import shown

            raise StasadmError(
                f"-f {shown(target)}: sys.conf can only refer to a file whose path is printable"
                " UTF-8 text without ' #' or ' ;'; choose another path"
            ) from None
        _write_value_file(file, value)
        _set(conf, key, f"file://{target}")
    else:
        _set(conf, key, value)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stasadm", description="STorage Appliance Services admin")
    p.add_argument("-v", "--version", action="store_true", help="print version and exit")
    p.add_argument("-c", "--conf-file", default=DEFAULT_SYS_CONF, metavar="FILE",
                   help=f"sys.conf to update (default: {DEFAULT_SYS_CONF})")  # fmt: skip
    sub = p.add_subparsers(dest="cmd", title="commands")
    for name, what in (("hostnqn", "host NQN"), ("hostid", "host ID")):
        c = sub.add_parser(name, help=f"create the {what}")
        c.add_argument("-f", "--file", metavar="FILE", help=f"write the {what} to FILE")
    c = sub.add_parser("set-symname", help="set the host symbolic name")
    c.add_argument("-f", "--file", metavar="FILE",
                   help="write the symbolic name to FILE; it must then have no spaces, since"
                   " the daemons read only the first word of FILE (as upstream)")  # fmt: skip
    c.add_argument("symname", metavar="SYMNAME")
    sub.add_parser("clear-symname", help="remove the host symbolic name")
    return p


def _run(args: argparse.Namespace) -> int:
    try:
        if args.cmd == "hostnqn":
            save(args.conf_file, "nqn", NQN_PREFIX + derive_host_uuid(), args.file)
        elif args.cmd == "hostid":
            save(args.conf_file, "id", str(uuid.uuid4()), args.file)
        elif args.cmd == "set-symname":
            save(args.conf_file, "symname", args.symname, args.file)
        else:
            _set(args.conf_file, "symname", None)
    except StasadmError as exc:
        hint = ""
        if "Permission denied" in str(exc) and os.geteuid() != 0:  # /etc/stas is root's
            hint = f"; run it as root (sudo stasadm {args.cmd} ...)"
        print(f"stasadm: {exc}{hint}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from stas.ctl.output import guarded, write_out

    parser = build_parser()

    def body() -> int:
        args = parser.parse_args(argv)
        if args.version:
            write_out(f"nvme-stas {__version__}")
            return 0
        if not args.cmd:
            write_out(parser.format_usage().rstrip("\n"))
            return 1
        return _run(args)

    return guarded("stasadm", body)


if __name__ == "__main__":
    sys.exit(main())
