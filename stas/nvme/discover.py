"""``python -m stas.nvme.discover``: ``nvme discover`` without root, kernel module or libnvme.

Talks NVMe/TCP to the discovery controller from userspace (``DiscoverySession``) and prints
the discovery log page in nvme-cli's text layout or as JSON. With ``--persistent`` it stays
connected and prints every AEN and the page that follows it, until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import uuid
from typing import NoReturn, TextIO

import trio

from stas.nvme.errors import DiscoveryError, NvmeStatusError, ProtocolError
from stas.nvme.host_ops import (
    WELL_KNOWN_DISC_NQN,
    HostIdentity,
    SessionOptions,
    default_host_identity,
)
from stas.nvme.logpage import DiscoveryLogPage, LogPageEntry
from stas.nvme.session import DiscoverySession

PROG = "discover"
DEFAULT_PERSISTENT_KATO_S = 30.0

# nvme-cli / libnvme spellings for the text output.
_TRTYPE = {1: "rdma", 2: "fc", 3: "tcp", 0xFE: "loop"}
_ADRFAM = {0: "pci", 1: "ipv4", 2: "ipv6", 3: "infiniband", 4: "fibre-channel", 0xFE: "loopback"}
_SUBTYPE = {1: "referral", 2: "nvme subsystem", 3: "current discovery subsystem"}
_TREQ_SECURE = {0: "not specified", 1: "required", 2: "not required", 3: "reserved"}
_EFLAGS = ((2, "explicit discovery connections"), (1, "duplicate discovery information"),
           (4, "no cdc connectivity"))  # fmt: skip
_SECTYPE = {0: "none", 1: "tls", 2: "tls13"}


class _UsageError(Exception):
    """A bad command line; reported as one line like every other error."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=f"python -m stas.nvme.{PROG}", description=__doc__.splitlines()[0])
    p.add_argument("-t", "--transport", default="tcp", help="transport (only tcp)")
    p.add_argument("-a", "--traddr", required=True, help="discovery controller address")
    p.add_argument("-s", "--trsvcid", default="8009", help="discovery controller port")
    p.add_argument("-q", "--hostnqn", help="host NQN (default: /etc/nvme/hostnqn or derived)")
    p.add_argument("-n", "--nqn", default=WELL_KNOWN_DISC_NQN, help="discovery subsystem NQN")
    p.add_argument("-I", "--hostid", help="host ID (a UUID)")
    p.add_argument("-w", "--host-traddr", help="source address to connect from")
    p.add_argument("-f", "--host-iface", help="network interface to connect through")
    p.add_argument("-j", "--json", action="store_true", help="print JSON")
    p.add_argument("-p", "--persistent", action="store_true", help="stay connected, show AENs")
    p.add_argument("--pleo", action="store_true", help="ask for port-local entries only")
    p.add_argument("--kato", type=float, help="keep-alive timeout in seconds")
    p.add_argument("--timeout", type=float, default=10.0, help="per-step timeout in seconds")
    return p


def _host_identity(args: argparse.Namespace) -> HostIdentity:
    base = default_host_identity()
    hostnqn = args.hostnqn or base.hostnqn
    hostid = base.hostid
    if args.hostid is not None:
        try:
            hostid = uuid.UUID(args.hostid).bytes
        except ValueError:
            raise _UsageError(f"invalid --hostid {args.hostid!r}: not a UUID") from None
    return HostIdentity(hostnqn=hostnqn, hostid=hostid)


def _options(args: argparse.Namespace) -> SessionOptions:
    if args.transport.lower() != "tcp":
        raise _UsageError(f"transport {args.transport!r} is not supported (only tcp)")
    if not 0 < args.timeout <= 3600:
        raise _UsageError(f"invalid --timeout {args.timeout:g}: must be > 0 and <= 3600")
    kato = args.kato
    if kato is None:
        kato = DEFAULT_PERSISTENT_KATO_S if args.persistent else 0.0
    if not 0 <= kato <= 3600:
        raise _UsageError(f"invalid --kato {kato:g}: must be between 0 and 3600 seconds")
    return SessionOptions(
        kato_ms=round(kato * 1000),
        connect_timeout=args.timeout,
        command_timeout=args.timeout,
        pleo=args.pleo,
        persistent=args.persistent,
    )


# --- output -------------------------------------------------------------------------------


def _treq(treq: int) -> str:
    text = _TREQ_SECURE[treq & 0x3]
    if treq & 0x4:
        text += ", sq flow control disable supported"
    return text


def _eflags(eflags: int) -> str:
    names = [name for bit, name in _EFLAGS if eflags & bit]
    return ", ".join(names) if names else "none"


def format_entry(index: int, entry: LogPageEntry) -> str:
    """One entry in ``nvme discover``'s layout."""
    lines = [
        f"=====Discovery Log Entry {index}======",
        f"trtype:  {_TRTYPE.get(entry.trtype, 'unrecognized')}",
        f"adrfam:  {_ADRFAM.get(entry.adrfam, 'unrecognized')}",
        f"subtype: {_SUBTYPE.get(entry.subtype, 'unrecognized')}",
        f"treq:    {_treq(entry.treq)}",
        f"portid:  {entry.portid}",
        f"trsvcid: {entry.trsvcid}",
        f"subnqn:  {entry.subnqn}",
        f"traddr:  {entry.traddr}",
        f"eflags:  {_eflags(entry.eflags)}",
    ]
    if entry.trtype == 3:
        lines.append(f"sectype: {_SECTYPE.get(entry.tsas[0], 'unrecognized')}")
    return "\n".join(lines)


def format_page(page: DiscoveryLogPage, *, as_json: bool) -> str:
    if as_json:
        records = [entry.to_dlpe() for entry in page.entries]
        return json.dumps({"genctr": page.genctr, "records": records}, indent=2)
    head = f"Discovery Log Number of Records {len(page.entries)}, Generation counter {page.genctr}"
    return "\n".join([head, *(format_entry(i, e) for i, e in enumerate(page.entries))])


# --- running ------------------------------------------------------------------------------


async def _watch_signals(cancel: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            cancel.cancel()
            return


async def _discover(
    args: argparse.Namespace, host: HostIdentity, options: SessionOptions, out: TextIO
) -> None:
    async with DiscoverySession.open(
        args.traddr,
        args.trsvcid,
        subsysnqn=args.nqn,
        host=host,
        options=options,
        host_traddr=args.host_traddr,
        host_iface=args.host_iface,
    ) as session:
        print(format_page(await session.get_log_page(), as_json=args.json), file=out, flush=True)
        if not args.persistent:
            return
        async for aen in session.aens():
            print(f"AEN: {aen.describe()}", file=out, flush=True)
            if aen.is_discovery_log_change:
                page = await session.get_log_page()
                print(format_page(page, as_json=args.json), file=out, flush=True)


async def amain(argv: list[str], *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """The CLI inside an already running Trio loop (tests call this directly)."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args = _parser().parse_args(argv)
        host = _host_identity(args)
        options = _options(args)
    except _UsageError as exc:
        print(f"{PROG}: {exc}", file=err)
        return 1
    failure: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            if args.persistent and threading.current_thread() is threading.main_thread():
                nursery.start_soon(_watch_signals, nursery.cancel_scope)
            await _discover(args, host, options, out)
            nursery.cancel_scope.cancel()
    except* (DiscoveryError, NvmeStatusError, ProtocolError, ValueError) as group:
        failure = _first(group)
    if failure is not None:
        print(f"{PROG}: {failure}", file=err)
        return 1
    return 0


def _first(group: BaseExceptionGroup) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def main(argv: list[str] | None = None) -> int:
    try:
        return trio.run(amain, sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
