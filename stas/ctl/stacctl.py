"""stacctl: upstream's CLI for stacd over D-Bus (ls, status, tron, troff), plus --json."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from stas.constants import TID_KEYS as TID_ORDER
from stas.ctl.common import EXIT_FAIL, EXIT_OK, base_parser, connect, emit, run_main, set_tron


def build_parser() -> argparse.ArgumentParser:
    p, sub = base_parser("stacctl", "STorage Appliance Connector (stacd) control")
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


def _plan(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The same computation as ``stacd --dry-run`` (stafd's pages, stacd.conf, the kernel).

    A config file it cannot read is one line naming the file, as stacd logs it.
    """
    if args.json:  # the plan is text only: say so rather than print text to a JSON reader
        parser.exit(2, f"{parser.prog}: error: plan has no --json output\n")
    import trio

    from stas.config.errors import ConfigError
    from stas.stacd import StacdOptions, dry_run

    try:
        return trio.run(dry_run, StacdOptions(args.conf_file, args.sys_conf))
    except ConfigError as exc:
        print(f"{parser.prog} plan: {exc}", file=sys.stderr)
        return EXIT_FAIL


def _commands(args: argparse.Namespace) -> int:
    from stas.dbus.idl import STACD

    with connect(STACD) as stac:
        if args.cmd in ("tron", "troff"):
            return set_tron(stac, args.cmd, as_json=args.json)
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
    return run_main(
        parser, argv, "stacd", _commands, lambda a: _plan(parser, a) if a.cmd == "plan" else None
    )


if __name__ == "__main__":
    sys.exit(main())
