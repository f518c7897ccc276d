"""stafctl: upstream's CLI for stafd over D-Bus (ls, status, dlp, adlp, tron, troff), plus --json.

Default output is upstream's (``pprint`` of the objects) so scripts that parse it keep working.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from stas.constants import TID_KEYS as TID_ORDER
from stas.constants import WELL_KNOWN_DISC_NQN, default_trsvcid, tid_matches
from stas.ctl.common import (
    EXIT_OK,
    add_command,
    base_parser,
    connect,
    emit,
    host_nqn_default,
    run_main,
    set_tron,
    tid_field,
)

ADDR_MAX, TRSVCID_MAX, NQN_MAX, IFNAME_MAX = 256, 32, 223, 15  # NVMe field sizes, IFNAMSIZ - 1


def build_parser() -> argparse.ArgumentParser:
    p, sub = base_parser("stafctl", "STorage Appliance Finder (stafd) control")
    dlp = add_command(sub, "dlp", "show the discovery log pages of one discovery controller")
    dlp.add_argument(
        "-t",
        "--transport",
        choices=["tcp", "rdma", "fc", "loop"],
        default="tcp",
        help="transport (default: tcp)",
    )
    dlp.add_argument("-a", "--traddr", required=True, help="transport address",
                     type=tid_field("transport address", ADDR_MAX, empty=False))  # fmt: skip
    dlp.add_argument("-s", "--trsvcid", required=True, help="transport service id (port)",
                     type=tid_field("transport service id", TRSVCID_MAX))  # fmt: skip
    dlp.add_argument("-w", "--host-traddr", default="", help="host transport address",
                     type=tid_field("host transport address", ADDR_MAX))  # fmt: skip
    dlp.add_argument("-f", "--host-iface", default="", help="host interface",
                     type=tid_field("host interface name", IFNAME_MAX))  # fmt: skip
    dlp.add_argument("-q", "--host-nqn", default=None, help="host NQN (default: from sys.conf)",
                     type=tid_field("host NQN", NQN_MAX))  # fmt: skip
    dlp.add_argument("-n", "--nqn", default=WELL_KNOWN_DISC_NQN, help="subsystem NQN",
                     type=tid_field("subsystem NQN", NQN_MAX, empty=False))  # fmt: skip
    adlp = add_command(sub, "adlp", "show the discovery log pages of all controllers")
    adlp.add_argument("-d", "--detailed", action="store_true", help="show details")
    return p


def _tid_args(ctrl: dict[str, str]) -> tuple[str, ...]:
    return tuple(ctrl.get(k, "") for k in TID_ORDER)


def check_port(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """tcp and rdma name a DC by port number: ``-s abc`` can only be a typo (exit 2, say so)."""
    port, transport = getattr(args, "trsvcid", ""), getattr(args, "transport", "")
    if transport not in ("tcp", "rdma") or not port:
        return
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        usual = default_trsvcid(transport)
        why = f"{port!r} is not a port number 1..65535 (the {transport} default is {usual})"
        parser.exit(2, f"{parser.prog} dlp: error: argument -s/--trsvcid: {why}\n")


def _commands(args: argparse.Namespace) -> int:
    from stas.dbus.idl import STAFD

    with connect(STAFD) as staf:
        if args.cmd in ("tron", "troff"):
            return set_tron(staf, args.cmd, as_json=args.json)
        result: Any
        if args.cmd == "ls":
            (result,) = staf.call("list_controllers", args.detailed)
        elif args.cmd == "dlp":
            nqn = host_nqn_default() if args.host_nqn is None else args.host_nqn
            tid = (args.transport, args.traddr, args.trsvcid, args.nqn, args.host_traddr,
                   args.host_iface, nqn)  # fmt: skip
            (result,) = staf.call("get_log_pages", *tid)
            if not result:
                _note_if_unmatched(staf, tid)
        elif args.cmd == "adlp":
            (raw,) = staf.call("get_all_log_pages", args.detailed)
            result = json.loads(raw)
        else:  # status
            (info,) = staf.call("process_info")
            result = json.loads(info)
            (ctrls,) = staf.call("list_controllers", True)
            for ctrl in ctrls:
                (pages,) = staf.call("get_log_pages", *_tid_args(ctrl))
                (details,) = staf.call("controller_info", *_tid_args(ctrl))
                ctrl.update(json.loads(details))
                ctrl["log_pages"] = pages
            result["controllers"] = ctrls
        emit(_plain(result), as_json=args.json)
    return EXIT_OK


def _note_if_unmatched(staf: Any, tid: tuple[str, ...]) -> None:
    """An empty ``dlp`` either is an empty log page or names no DC: say which on stderr.

    stdout keeps upstream's ``[]`` and the exit code stays 0 (scripts parsing it keep working).
    """
    from stas.dbus.common import DBusAccessDenied

    try:
        (details,) = staf.call("controller_info", *tid)
        known = bool(json.loads(details))
    except DBusAccessDenied:  # .debug is root's (shipped policy): anyone may list the DCs
        (dcs,) = staf.call("list_controllers", False)
        known = any(tid_matches(_tid_args(dc), tid) for dc in dcs)
    if known:
        return
    named = ", ".join(f"{k}={v!r}" for k, v in zip(TID_ORDER, tid, strict=True) if v)
    print(f"stafctl: no discovery controller matches {named} (see stafctl ls)", file=sys.stderr)


def _plain(obj: Any) -> Any:
    """jeepney gives lists of dicts already; make tuples lists so pprint matches upstream."""
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    return run_main(parser, argv, "stafd", _commands, lambda args: check_port(parser, args))


if __name__ == "__main__":
    sys.exit(main())
