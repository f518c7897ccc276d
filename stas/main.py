"""Entry points of the daemons: arguments (upstream's, plus ours), logging, then run."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence

from stas import __version__

DEFAULT_STAFD_CONF = "/etc/stas/stafd.conf"
DEFAULT_STACD_CONF = "/etc/stas/stacd.conf"
DEFAULT_SYS_CONF = "/etc/stas/sys.conf"


def _state_dir(prog: str) -> str:
    return os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0] or f"/run/{prog}"


def _defer_imports() -> None:
    """Before logging and the daemon's modules load: the modules they import but seldom use
    get stand-ins until first used (``stas.deferred``), including those logging itself
    imports (tokenize, through traceback and linecache)."""
    from stas.deferred import answer_pthread_lookup, defer_imports

    defer_imports()
    answer_pthread_lookup()


def _import_trio() -> None:
    """trio without the parts a daemon does not use (TLS, DTLS, subprocesses, async files):
    they load when first looked up (``stas.deferred.import_trio``)."""
    from stas.deferred import import_trio

    import_trio()


def _starting(prog: str) -> None:
    """The first log line, before the daemon's own modules load: the journal shows at once
    that the process runs (and with which pid), whatever the imports and configuration take."""
    import logging

    logging.getLogger(prog).info("%s %s starting (pid %d)", prog, __version__, os.getpid())


def _freeze_startup_objects() -> None:
    """Everything imported so far lives as long as the process: move it out of the garbage
    collector's sight, so a full collection no longer walks it (about 27,000 objects, ~5 ms
    each time on a busy 2-core machine). No collection first: that would cost start-up time
    for little garbage. (Nor is the collector paused while the modules load: that saves ~2%
    of the imports' instructions but keeps ~1 MB more heap, issue 8's RSS bound.)"""
    import gc

    gc.freeze()


@contextlib.contextmanager
def _recorded_attrs_code() -> Iterator[None]:
    """attrs' generated methods from the table ``make install`` recorded while the daemon's
    modules load (``stas.attrs_cache``: a quarter of the imports' instructions); attrs keeps no
    generated source for tracebacks (``drop_sources``). After logging is set up (its deferred
    imports: attrs must not load OpenSSL)."""
    from stas.attrs_cache import answer_builtin_signatures, drop_sources, install

    hook = install()
    undo = answer_builtin_signatures()  # and no tokenize for `converter=bytes`
    try:
        yield
    finally:
        undo()
        if hook is not None:
            hook.remove()
        drop_sources()  # ~0.5 MB of generated source kept for tracebacks only


def daemon_parser(prog: str, description: str, conf: str) -> argparse.ArgumentParser:
    """The options both daemons take, as upstream's (-f, -s, --tron, -v) plus --sys-conf."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("-f", "--conf-file", default=conf, metavar="FILE",
                   help=f"configuration file (default: {conf})")  # fmt: skip
    p.add_argument("-s", "--syslog", action="store_true",
                   help="log to the journal/syslog instead of stdout")  # fmt: skip
    p.add_argument("--tron", action="store_true", help="trace on (debug logging)")
    p.add_argument("-v", "--version", action="store_true", help="print version and exit")
    p.add_argument("--sys-conf", default=DEFAULT_SYS_CONF, metavar="FILE",
                   help=f"host identity file (default: {DEFAULT_SYS_CONF})")  # fmt: skip
    return p


def stafd_parser() -> argparse.ArgumentParser:
    p = daemon_parser(
        "stafd", "STorage Appliance Finder: finds NVMe-oF discovery controllers", DEFAULT_STAFD_CONF
    )
    p.add_argument("--state-dir", default=None, metavar="DIR",
                   help="where the last-known state is kept (default: $RUNTIME_DIRECTORY "
                        "or /run/stafd)")  # fmt: skip
    p.add_argument(
        "--mdns-interfaces",
        default="",
        metavar="LIST",
        help="local addresses to browse mDNS on, comma-separated (default: all)",
    )
    p.add_argument("--nbft-dir", default="/sys/firmware/acpi/tables", metavar="DIR",
                   help="where the firmware's NBFT* tables are (default: %(default)s)")  # fmt: skip
    return p


def _libnvme_version() -> str:
    try:
        from importlib.metadata import version

        return version("libnvme")
    except Exception:  # any failure means "not installed" here
        return "not installed"


def stafd_main(argv: Sequence[str] | None = None) -> int:
    args = stafd_parser().parse_args(argv)
    if args.version:
        print(f"nvme-stas {__version__}")
        print(f"libnvme {_libnvme_version()}")
        return 0
    from stas.kernel.thp import disable_thp

    disable_thp()  # before the modules fill the heap (issue 8's RSS; stas.kernel.thp)
    _defer_imports()
    from stas.logsetup import setup_logging

    tron = setup_logging("stafd", syslog=args.syslog, tron=args.tron)
    _starting("stafd")
    with _recorded_attrs_code():
        _import_trio()
        from stas.stafd import StafdOptions, run_stafd

    opts = StafdOptions(
        conf_file=args.conf_file,
        sys_conf=args.sys_conf,
        state_dir=args.state_dir or _state_dir("stafd"),
        tron=args.tron,
        mdns_interfaces=tuple(i.strip() for i in args.mdns_interfaces.split(",") if i.strip()),
        nbft_dir=args.nbft_dir,
    )
    if os.geteuid() != 0:
        import logging

        logging.getLogger("stafd").info("not running as root: userspace discovery only")
    _freeze_startup_objects()
    return run_stafd(opts, tron)


def stacd_parser() -> argparse.ArgumentParser:
    p = daemon_parser(
        "stacd", "STorage Appliance Connector: connects NVMe I/O controllers", DEFAULT_STACD_CONF
    )
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be connected, kept and disconnected, and why",
                   )  # fmt: skip
    p.add_argument("--kernel", choices=["auto", "fake"], default="auto",
                   help="fake: an in-memory kernel, for demos and tests without NVMe modules",
                   )  # fmt: skip
    p.add_argument("--coexist-root", metavar="DIR",
                   help="find /run/udev/rules.d, /run/nvme/registry and /etc/nvme under DIR "
                   "(default /; with --kernel fake: not at all)")  # fmt: skip
    return p


def stacd_main(argv: Sequence[str] | None = None) -> int:
    args = stacd_parser().parse_args(argv)
    if args.version:
        print(f"nvme-stas {__version__}")
        return 0
    from stas.kernel.thp import disable_thp

    disable_thp()  # before the modules fill the heap (issue 8's RSS; stas.kernel.thp)
    _defer_imports()
    from stas.logsetup import setup_logging

    tron = setup_logging("stacd", syslog=args.syslog, tron=args.tron)
    if not args.dry_run:  # a dry run's stdout is the plan alone
        _starting("stacd")
    with _recorded_attrs_code():
        _import_trio()
        from stas.stacd import run_stacd_args

    _freeze_startup_objects()
    return run_stacd_args(args, tron)


if __name__ == "__main__":
    sys.exit(stafd_main())
