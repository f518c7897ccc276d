#!/usr/bin/env python3
"""Userspace NVMe/TCP discovery controller simulator (no nvmet kernel modules needed).

    simulator.py serve -f nvmet.conf [--mdns] [--control PATH] [--dctype ddc|cdc|none]
                       [--fault K=V ...] [--ephemeral]
    simulator.py link|unlink -p PORT -s NQN [--control PATH]
    simulator.py ls [--control PATH]

``link``/``unlink`` talk to a running ``serve`` over its control socket, like
``nvmet.py link``/``unlink`` do for the kernel target, so AENs can be triggered by hand.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make stas/ and the harness importable
    _here = Path(__file__).resolve().parent
    for _p in (_here, _here.parent):
        if str(_p) not in sys.path:
            sys.path.insert(0, str(_p))

import trio
from nvmet_config import SIMULATOR_CAPS, NvmetConfError, load_nvmet_conf
from sim_faults import FaultError, Faults, parse_faults
from sim_model import SimModel
from sim_server import SimulatorError, open_simulator

CONTROL_NAME = "nvmet-sim.sock"
CONTROL_TIMEOUT_S = 5.0


def default_control_path() -> str:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return str(Path(runtime) / CONTROL_NAME) if runtime else f"/run/{CONTROL_NAME}"


class CliError(Exception):
    """A user-facing failure: printed as one line on stderr, exit status 1."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simulator.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    control = argparse.ArgumentParser(add_help=False)
    control.add_argument(
        "--control", default=None, help=f"control socket (default {default_control_path()})"
    )

    serve = sub.add_parser("serve", parents=[control], help="run the discovery controller")
    serve.add_argument("-f", "--conf-file", required=True, help="nvmet.conf to serve")
    serve.add_argument("--mdns", action="store_true", help="announce ports over mDNS")
    serve.add_argument("--dctype", choices=("ddc", "cdc", "none"), default="ddc")
    serve.add_argument(
        "--fault", action="append", default=[], metavar="K=V",
        help="refuse, drop-after=N, delay=S, genctr-bump=N, corrupt-log-page, aen-storm=N",
    )  # fmt: skip
    serve.add_argument("--ephemeral", action="store_true", help="bind port 0 instead")
    serve.add_argument("--epcsd", action="store_true", help="set EFLAGS.EPCSD in entries")
    serve.add_argument(
        "--current-entry", action="store_true", help="add a subtype 3 entry per port"
    )
    serve.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    for name in ("link", "unlink"):
        p = sub.add_parser(name, parents=[control], help=f"{name} a subsystem and a port")
        p.add_argument("-p", "--port", type=int, required=True, help="port id")
        p.add_argument("-s", "--subnqn", required=True, help="subsystem NQN")
    sub.add_parser("ls", parents=[control], help="show ports, links and GENCTR")
    return parser


# -- client side ------------------------------------------------------------------------------
def control_request(path: str, request: dict[str, object]) -> dict[str, object]:
    """Send one JSON request to a running simulator and return its reply."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(CONTROL_TIMEOUT_S)
    try:
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise CliError(f"no simulator running at {path}") from None
        except OSError as exc:
            raise CliError(f"cannot reach simulator at {path}: {exc.strerror}") from None
        sock.sendall(json.dumps(request).encode() + b"\n")
        buf = b""
        while b"\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise CliError(f"simulator at {path} closed the connection without answering")
            buf += chunk
    except TimeoutError:
        raise CliError(
            f"simulator at {path} did not answer within {CONTROL_TIMEOUT_S:g} s"
        ) from None
    finally:
        sock.close()
    reply = json.loads(buf.split(b"\n", 1)[0])
    if not reply.get("ok"):
        raise CliError(str(reply.get("error", "request failed")))
    return reply


def _client(args: argparse.Namespace, path: str) -> int:
    if args.cmd == "ls":
        reply = control_request(path, {"op": "ls"})
        reply.pop("ok", None)
        print(json.dumps(reply, indent=2))
        return 0
    reply = control_request(path, {"op": args.cmd, "port": args.port, "nqn": args.subnqn})
    verb = "linked" if args.cmd == "link" else "unlinked"
    print(f"{verb} {args.subnqn} {'to' if verb == 'linked' else 'from'} port {args.port} "
          f"(GENCTR {reply['genctr']})")  # fmt: skip
    return 0


# -- server side ------------------------------------------------------------------------------
async def _serve(args: argparse.Namespace, path: str, faults: Faults) -> None:
    conf = load_nvmet_conf(args.conf_file, SIMULATOR_CAPS)
    model = SimModel(conf, epcsd=args.epcsd, current_entry=args.current_entry)
    async with open_simulator(
        conf,
        model=model,
        ephemeral=args.ephemeral,
        dctype=args.dctype,
        faults=faults,
        mdns=args.mdns,
        control_path=path,
    ) as sim:
        for port_id, (host, port) in sorted(sim.endpoints.items()):
            shown = f"[{host}]" if ":" in host else host
            print(f"listening on {shown}:{port} (port {port_id})", flush=True)
        print(f"control socket {path}", flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                logging.getLogger("nvmet-sim").info("%s: stopping", signal.Signals(signum).name)
                return


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    path = args.control or default_control_path()
    try:
        if args.cmd != "serve":
            return _client(args, path)
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO,
            format="%(asctime)s %(name)s: %(message)s",
        )
        faults = parse_faults(args.fault)
        trio.run(_serve, args, path, faults)
        return 0
    except (CliError, NvmetConfError, FaultError, SimulatorError) as exc:
        print(f"simulator.py: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
