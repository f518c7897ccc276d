"""stacctl: upstream's CLI for stacd over D-Bus (ls, status, tron, troff), plus --json."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from stas.ctl.common import EXIT_FAIL, EXIT_OK, emit, run_dbus, version_line

TID_ORDER = ("transport", "traddr", "trsvcid", "subsysnqn", "host-traddr", "host-iface", "host-nqn")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stacctl", description="STorage Appliance Connector (stacd) control"
    )
    p.add_argument("-v", "--version", action="store_true", help="print version and exit")
    p.add_argument("--json", action="store_true", help="machine-readable JSON output")
    sub = p.add_subparsers(dest="cmd", title="commands")
    sub.add_parser("tron", help="trace on")
    sub.add_parser("troff", help="trace off")
    sub.add_parser("status", help="show stacd status")
    ls = sub.add_parser("ls", help="list I/O controllers")
    ls.add_argument("-d", "--detailed", action="store_true", help="show details")
    plan = sub.add_parser("plan", help="what stacd would connect, keep and disconnect, and why")
    plan.add_argument(
        "-f",
        "--conf-file",
        default="/etc/stas/stacd.conf",
        metavar="FILE",
        help="stacd.conf to plan with (default: /etc/stas/stacd.conf)",
    )
    plan.add_argument(
        "--sys-conf",
        default="/etc/stas/sys.conf",
        metavar="FILE",
        help="host identity (default: /etc/stas/sys.conf)",
    )
    return p


def _plan(args: argparse.Namespace) -> int:
    """The same computation as ``stacd --dry-run`` (stafd's pages, stacd.conf, the kernel)."""
    import trio

    from stas.stacd import StacdOptions, dry_run

    return trio.run(dry_run, StacdOptions(args.conf_file, args.sys_conf))


def _commands(args: argparse.Namespace) -> int:
    from stas.dbus.client import connect
    from stas.dbus.idl import STACD

    with connect(STACD) as stac:
        if args.cmd in ("tron", "troff"):
            stac.set("tron", args.cmd == "tron")
            print(f"tron = {stac.get('tron')}")
            return EXIT_OK
        result: Any
        if args.cmd == "ls":
            (result,) = stac.call("list_controllers", args.detailed)
        else:  # status
            (info,) = stac.call("process_info")
            result = json.loads(info)
            (ctrls,) = stac.call("list_controllers", True)
            for ctrl in ctrls:
                (details,) = stac.call("controller_info", *(ctrl.get(k, "") for k in TID_ORDER))
                ctrl.update(json.loads(details))
            result["controllers"] = ctrls
        emit(result, as_json=args.json)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        print(version_line())
        return EXIT_OK
    if not args.cmd:
        parser.print_usage(sys.stdout)
        return EXIT_FAIL
    if args.cmd == "plan":
        return _plan(args)
    return run_dbus("stacd", lambda: _commands(args))


if __name__ == "__main__":
    sys.exit(main())
