"""stacd's root: configuration, identity, and its supervision tree (``supervision_tree``).

Every actor runs under the tree: a crash of the connector restarts it with the stafd client
and the kernel feed after it (so it hears stafd's log pages and the kernel's controllers
again); an IOC actor's crash loop marks it failed and is retried later by the connector's
supervisor; only a crash loop of the tree itself ends stacd (one line, exit 1).
``stacctl status`` shows the tree's health under ``supervision``.

``stacd --dry-run`` asks stafd once (if it is there), reads stacd.conf and the kernel's
controllers, and prints what it would connect, keep and disconnect, and why.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import uuid
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio
from trio_util import AsyncValue

from stas import __version__
from stas.actors.connector import BootReader, Connector
from stas.actors.daemon_dbus import IDLE_TIMER, WatchedTron, upstream_status_keys
from stas.actors.stacd_dbus import run_stacd_dbus
from stas.actors.stafd_client import log_pages_from_json, run_stafd_client
from stas.actors.supervisor import SupervisionReport
from stas.actors.tree import Child, Restart, Strategy, Tree, gave_up, run_tree
from stas.coexist import Coexist
from stas.config import ConfigError, ServiceConfig, SysConfig, load_service_config, load_sys_config
from stas.dbus.common import DBusError
from stas.logsetup import TronControl
from stas.messages import ConnectorMsg, Dlpe, StacdConfigChanged, StacdSnapshot, Tid
from stas.nbft_files import SYSFS_DIR as NBFT_DIR
from stas.nbft_files import has_tables
from stas.plan import decide, format_plan, wanted_iocs
from stas.sdnotify import Notifier
from stas.state import default_path, note_upstream_state

log = logging.getLogger("stacd")
DEFAULT_STACD_CONF = "/etc/stas/stacd.conf"
DEFAULT_SYS_CONF = "/etc/stas/sys.conf"


@attrs.frozen
class StacdOptions:
    conf_file: str
    sys_conf: str
    tron: bool = False
    kernel: str = "auto"  # auto | libnvme | fake (tests and demos without NVMe modules)
    bus_address: str | None = None
    coexist_root: str | None = None  # udev shadow, registry, /etc/nvme under it (default /)


def host_ids(sysconf: SysConfig) -> tuple[str, str]:
    if sysconf.hostnqn and sysconf.hostid:
        return sysconf.hostnqn, sysconf.hostid
    from stas.nvme.hostid import default_host_identity  # only when sys.conf is incomplete

    derived = default_host_identity()
    hostnqn = sysconf.hostnqn or derived.hostnqn
    if not sysconf.hostnqn:
        log.warning(
            "no host NQN configured (run 'stasadm hostnqn -f /etc/nvme/hostnqn'); using %s", hostnqn
        )
    hostid = sysconf.hostid or str(uuid.UUID(bytes=derived.hostid))
    return hostnqn, hostid


def make_kernel(kind: str) -> Any:
    if kind == "fake":
        from stas.kernel.fake import FakeKernel

        log.warning("using the in-memory fake kernel: nothing is really connected")
        return FakeKernel()
    if not os.path.exists("/dev/nvme-fabrics"):
        raise ConfigError(
            "/dev/nvme-fabrics is missing: load the nvme-tcp kernel module (modprobe nvme-tcp)"
        )
    from stas.kernel.libnvme_kernel import LibnvmeKernel

    return LibnvmeKernel()


class Stacd:
    def __init__(self, opts: StacdOptions, tron: TronControl, notifier: Notifier) -> None:
        self.opts, self.notifier = opts, notifier
        fake = opts.kernel == "fake" and opts.coexist_root is None  # a demo touches no host files
        self.coexist = None if fake else Coexist.at(Path(opts.coexist_root or "/"))
        self.tron = WatchedTron(tron)  # a reload's tron change reaches D-Bus subscribers
        self.config, self.sysconf = self.load()
        self.tron.set(opts.tron or self.config.tron)
        self.hostnqn, self.hostid = host_ids(self.sysconf)
        self.kernel = make_kernel(opts.kernel)
        self.kernel.host_key = self.sysconf.hostkey
        note_upstream_state(default_path("stacd").parent, "stacd")  # upstream's pickle: ignored
        self.published = AsyncValue(StacdSnapshot())
        self.inbox_send, self.inbox = trio.open_memory_channel[ConnectorMsg](100_000)
        self.report = SupervisionReport()

    def load(self) -> tuple[ServiceConfig, SysConfig]:
        config, _ = load_service_config(self.opts.conf_file, "stacd")
        sysconf = load_sys_config(self.opts.sys_conf)
        for problem in sysconf.problems:
            log.warning("%s", problem)
        if self.coexist is not None:  # /etc/nvme's exclusion list, re-read on every reload
            excl = self.coexist.exclusions(sysconf.hostid or "")
            config = attrs.evolve(config, nvme_exclusions=excl)
        return config, sysconf

    def info(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "tron": self.tron.get(),
            "log-level": self.tron.level_name(),
            "hostnqn": self.hostnqn,
            "hostid": self.hostid,
            "hostkey": self.sysconf.hostkey or "",
            "symname": self.sysconf.symname or "",
            "last known config file": "",  # none: stacd starts warm from the kernel's controllers
            **upstream_status_keys(),
            "terminator.audit timer": IDLE_TIMER,  # disconnects are never deferred here
            "disconnect-scope": self.config.disconnect_scope,
            "supervision": self.report.as_dict(),  # ours: the tree's health, crash loops
        }

    def supervision_tree(self) -> Tree:
        """stacd's actors, what each gets back when restarted, and what restarts with what."""
        fake_feed = getattr(self.kernel, "events", None) is not None
        connecting = Tree("connecting", (
            Child("connector", self.run_connector, needs="its inbox (kept); the running "
                  "config; the kernel's controllers (read at start: connected ones adopted)"),
            Child("stafd client", self.run_stafd_client, needs="the connector's inbox; "
                  "reads every log page from stafd on start"),
            Child("kernel events", self.run_kernel_events,
                  Restart.TRANSIENT if fake_feed else Restart.PERMANENT,
                  needs="the connector's inbox; resyncs from sysfs on start"),
        ), Strategy.REST_FOR_ONE)  # fmt: skip
        # as stafd's root: a few subtree give-ups within 2 minutes end stacd (exit 1)
        return Tree("stacd", (
            connecting,
            Child("dbus", self.run_dbus, needs="the published snapshot and info (kept)"),
            Child("watchdog", self.run_watchdog, Restart.TRANSIENT, needs="nothing"),
        ), intensity=3, period=120.0)  # fmt: skip

    async def run_connector(self, task_status: trio.TaskStatus[Any]) -> None:
        connector = Connector(
            config=self.config,
            host_nqn=self.hostnqn,
            hostid=self.hostid,
            kernel=self.kernel,
            published=self.published,
            boot_subsystems=None if self.opts.kernel == "fake" else boot_reader(),
            registry=self.coexist.registry if self.coexist is not None else None,
        )
        await connector.run(self.inbox, task_status=task_status)

    async def run_stafd_client(self, task_status: trio.TaskStatus[Any]) -> None:
        async with self.inbox_send.clone() as send:
            task_status.started()
            await run_stafd_client(send, address=self.opts.bus_address)

    async def run_kernel_events(self, task_status: trio.TaskStatus[Any]) -> None:
        """The kernel's uevents into the connector's inbox (the fake kernel feeds its own)."""
        events = getattr(self.kernel, "events", None)
        async with self.inbox_send.clone() as send:
            if events is not None:
                task_status.started()
                async for ev in events:
                    await send.send(ev)
                return
            from stas.actors.uevents import run_uevent_monitor

            await run_uevent_monitor(send, resync=self.kernel.list_controllers,
                                     task_status=task_status)  # fmt: skip

    async def run_dbus(self, task_status: trio.TaskStatus[Any]) -> None:
        await run_stacd_dbus(
            snapshot=self.published,
            info=self.info,
            tron=self.tron,
            address=self.opts.bus_address,
            read_sysfs=self.opts.kernel != "fake",
            task_status=task_status,
        )

    async def run_watchdog(self, task_status: trio.TaskStatus[Any]) -> None:
        task_status.started()
        await self.notifier.run_watchdog()  # returns at once without a systemd watchdog

    async def reload(self) -> None:
        self.notifier.reloading()
        try:
            self.config, self.sysconf = self.load()
        except ConfigError as exc:
            log.error("reload: %s; keeping the running configuration", exc)
        else:
            self.tron.set(self.opts.tron or self.config.tron)
            self.hostnqn, self.hostid = host_ids(self.sysconf)
            self.kernel.host_key = self.sysconf.hostkey
            if self.coexist is not None:
                self.coexist.shadow.apply(self.config.udev_rule)
            await self.inbox_send.send(StacdConfigChanged(self.config, self.hostnqn, self.hostid))
            log.info("configuration reloaded from %s", self.opts.conf_file)
        self.notifier.ready()

    async def run(self) -> None:
        if self.coexist is None:
            return await self._run()
        self.coexist.shadow.apply(self.config.udev_rule)  # also cleans a crash's stale shadow
        try:
            await self._run()
        finally:
            self.coexist.shadow.remove()  # nvme-cli's rule is back once stacd is gone

    async def _run(self) -> None:
        with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(partial(run_tree, self.supervision_tree(), self.report))
                self.notifier.ready(f"{len(self.published.value.iocs)} I/O controllers")
                log.info("stacd %s ready (host NQN %s)", __version__, self.hostnqn)
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        await self.reload()
                        continue
                    log.info(
                        "%s: stopping; I/O controllers stay connected", signal.Signals(signum).name
                    )
                    self.notifier.stopping()
                    nursery.cancel_scope.cancel()
                    break


def fetch_log_pages(address: str | None) -> dict[Tid, tuple[Dlpe, ...]]:
    """stafd's log pages, once, over D-Bus, read as the stafd client reads them; empty (with a
    note) when stafd is not there."""
    from stas.dbus.client import connect
    from stas.dbus.idl import STAFD

    try:
        with connect(STAFD, address=address) as staf:
            (raw,) = staf.call("get_all_log_pages", True)
    except DBusError as exc:
        print(f"note: stafd not reachable ({exc}); planning from stacd.conf only")
        return {}
    try:
        return log_pages_from_json(raw)
    except ValueError as exc:  # not JSON, or not the shape get_all_log_pages returns
        print(f"note: stafd's get_all_log_pages reply is unusable ({exc}); "
              "planning from stacd.conf only")  # fmt: skip
        return {}


def boot_reader(directory: str = NBFT_DIR) -> BootReader:
    """The NBFT's boot subsystems for a host NQN; the NBFT parser is imported only when the
    firmware left tables (most hosts: never)."""
    if not has_tables(directory):
        return lambda _hostnqn: ()
    from stas.nbft import boot_subsystems_reader

    return boot_subsystems_reader(directory)


async def dry_run(opts: StacdOptions) -> int:
    config, _ = load_service_config(opts.conf_file, "stacd")
    hostnqn, hostid = host_ids(load_sys_config(opts.sys_conf))
    if opts.kernel != "fake" or opts.coexist_root is not None:  # as stacd would: /etc/nvme too
        root = Coexist.at(Path(opts.coexist_root or "/"))
        config = attrs.evolve(config, nvme_exclusions=root.exclusions(hostid))
    pages = await trio.to_thread.run_sync(fetch_log_pages, opts.bus_address)
    boot = [] if opts.kernel == "fake" else list(boot_reader()(hostnqn))
    wanted = wanted_iocs(config=config, log_pages=pages, host_nqn=hostnqn, boot=boot)
    if opts.kernel == "fake" or not os.path.isdir("/sys/class/nvme"):
        kernel_ctrls = []
    else:
        from stas.kernel.sysfs import read_controllers

        kernel_ctrls = read_controllers()
    print(format_plan(decide(wanted, {}, kernel_ctrls, config)))
    return 0


def stacd_parser() -> argparse.ArgumentParser:
    """stacd's arguments; defined in stas.main, which parses them before this module loads."""
    from stas.main import stacd_parser as parser

    return parser()


def stacd_entry(argv: Sequence[str] | None = None) -> int:
    from stas.main import stacd_main

    return stacd_main(argv)


def run_stacd_args(
    args: argparse.Namespace, tron: TronControl, *, clock: trio.abc.Clock | None = None
) -> int:
    """Run stacd (or its dry run) from parsed arguments, logging set up; the exit code."""
    opts = StacdOptions(
        args.conf_file, args.sys_conf, args.tron, args.kernel, coexist_root=args.coexist_root
    )
    try:
        if args.dry_run:
            return trio.run(dry_run, opts)
        trio.run(Stacd(opts, tron, Notifier()).run, clock=clock)
    except ConfigError as exc:
        log.error("%s", exc)
        return 1
    except BaseExceptionGroup as group:
        loop = gave_up(group)
        if loop is not None:
            log.error("%s", loop)  # each crash was logged with its traceback as it happened
            return 1
        dbus = group.subgroup(DBusError)
        if dbus is None:
            raise
        first: BaseException = dbus.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        log.error("D-Bus: %s", first)
        return 1
    except DBusError as exc:
        log.error("D-Bus: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(stacd_entry())
