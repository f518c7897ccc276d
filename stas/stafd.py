"""stafd's root: configuration, identity, and its supervision tree (``supervision_tree``).

Every actor runs under the tree: a crash restarts that actor (and, in the discovery subtree,
the mDNS browser that feeds the finder); a DC actor's crash loop marks that DC failed and is
retried later by the finder's supervisor; only a crash loop of the tree itself ends stafd
(one line, exit 1). ``stafctl status`` shows the tree's health under ``supervision``.

Lifecycle: state restored from the JSON cache, D-Bus name acquired, then ``READY=1``; SIGHUP
re-reads stafd.conf and sys.conf (``RELOADING=1`` ... ``READY=1``; an unreadable file keeps the
running configuration); SIGTERM/SIGINT save state and stop (``STOPPING=1``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio
from trio_util import AsyncValue

from stas import __version__
from stas.actors.daemon_dbus import IDLE_TIMER, WatchedTron, upstream_status_keys
from stas.actors.dc import DcSettings, connection_params, run_dc_actor
from stas.actors.dc_backend import UserspaceBackend
from stas.actors.dc_budget import EntryBudget
from stas.actors.finder import Finder
from stas.actors.stafd_dbus import run_stafd_dbus
from stas.actors.supervisor import SupervisionReport, describe
from stas.actors.tree import Child, Restart, RunningTree, Strategy, Tree, gave_up, run_tree
from stas.config import ConfigError, ServiceConfig, SysConfig, load_service_config, load_sys_config
from stas.dbus.common import DBusError
from stas.logsetup import TronControl
from stas.messages import (
    DcStatus,
    DcUpdate,
    DcWanted,
    FinderMsg,
    StafdConfigChanged,
    StafdSnapshot,
    Tid,
)
from stas.nbft_files import SYSFS_DIR as NBFT_DIR
from stas.nvme.hostid import HostIdentity, default_host_identity
from stas.sdnotify import Notifier
from stas.state import FILE_NAME, StateStore, note_upstream_state

log = logging.getLogger("stafd")


class FatalError(Exception):
    """stafd cannot run; the message says why (printed as one line, exit 1)."""


@attrs.frozen
class StafdOptions:
    conf_file: str
    sys_conf: str
    state_dir: str
    tron: bool = False
    mdns_interfaces: tuple[str, ...] = ()
    bus_address: str | None = None
    nbft_dir: str | None = NBFT_DIR  # where the NBFT* tables are (None: no NBFT)
    nvme_dir: str | None = "/etc/nvme"  # libnvme's exclusion list is read here (None: not read)


def host_identity(sysconf: SysConfig) -> HostIdentity:
    """sys.conf's identity; derived (with a warning) when the host files are missing."""
    derived = default_host_identity()
    hostnqn = sysconf.hostnqn or derived.hostnqn
    if not sysconf.hostnqn:
        log.warning("no host NQN configured (run 'stasadm hostnqn -f /etc/nvme/hostnqn'); "
                    "using %s", hostnqn)  # fmt: skip
    hostid = derived.hostid
    if sysconf.hostid:
        try:
            hostid = uuid.UUID(sysconf.hostid).bytes
        except ValueError:
            log.warning("host ID %r is not a UUID; using a derived one", sysconf.hostid)
    return HostIdentity(hostnqn=hostnqn, hostid=hostid, symname=sysconf.symname)


def load_config(opts: StafdOptions) -> tuple[ServiceConfig, SysConfig]:
    """Both files; ConfigError when stafd.conf cannot be read at all."""
    config, _warnings = load_service_config(opts.conf_file, "stafd")  # warnings are logged
    sysconf = load_sys_config(opts.sys_conf)
    for problem in sysconf.problems:
        log.warning("%s", problem)
    if opts.nvme_dir:  # /etc/nvme's exclusion list, shared with nvme-cli; re-read on reload
        from stas.coexist.exclusions import load_exclusions

        excl = load_exclusions(Path(opts.nvme_dir), hostid=sysconf.hostid or "")
        config = attrs.evolve(config, nvme_exclusions=excl)
    return config, sysconf


def choose_backend(config: ServiceConfig, identity: HostIdentity) -> tuple[str, Any, Any, Any]:
    """(name, backend, uevent hub, kernel): the kernel when usable (or demanded), else userspace."""
    want = config.dc_backend
    if want in ("kernel", "auto"):
        if os.access("/dev/nvme-fabrics", os.W_OK):
            from stas.actors.dc_kernel import KernelBackend, UeventHub
            from stas.kernel.libnvme_kernel import LibnvmeKernel
            from stas.kernel.libnvme_loader import LibnvmeUnavailable

            try:
                kernel = LibnvmeKernel()
            except LibnvmeUnavailable as exc:
                if want == "kernel":
                    raise FatalError(f"dc-backend=kernel: {exc}") from exc
                log.warning("dc-backend=auto: %s; using userspace NVMe/TCP", exc)
            else:
                hub = UeventHub()
                backend = KernelBackend(kernel, identity, hub, pleo=config.pleo)
                return "kernel", backend, hub, kernel
        elif want == "kernel":
            raise FatalError(
                "dc-backend=kernel: /dev/nvme-fabrics is missing or not writable "
                "(modprobe nvme-tcp; run as root), or use dc-backend=userspace"
            )
    return "userspace", UserspaceBackend(identity), None, None


class RestartStore(StateStore):
    """The finder's state store. A restarted finder gets its DCs back from the last published
    snapshot (fresher than the file, and there even when the file could not be written); the
    first start reads the file."""

    def __init__(self, path: Path, published: AsyncValue[StafdSnapshot]) -> None:
        super().__init__(path)
        self.published = published

    def load(self) -> dict[Tid, DcStatus]:
        snap: StafdSnapshot = self.published.value
        if snap.generation == 0:
            return super().load()
        return {dc.tid: dc for dc in snap.dcs}


def failed_status(last: DcStatus | None, wanted: DcWanted, exc: BaseException) -> DcStatus:
    """What D-Bus shows of a DC whose actor crashed, until it is back: its cached log page
    stays (stacd must not read a crash as "no subsystems")."""
    base = last or DcStatus(tid=wanted.tid, origin=wanted.origin, params=wanted.params)
    return attrs.evolve(base, state="failed", connected=False, device="nvme?",
                        last_error=f"internal error: {describe(exc)}")  # fmt: skip


class Stafd:
    """Holds what a reload replaces; the actors read it through the finder's inbox."""

    def __init__(self, opts: StafdOptions, tron: TronControl, notifier: Notifier) -> None:
        self.opts = opts
        self.tron = WatchedTron(tron)  # a reload's tron change reaches D-Bus subscribers
        self.notifier = notifier
        self.config, self.sysconf = load_config(opts)
        self.tron.set(opts.tron or self.config.tron)
        self.identity = host_identity(self.sysconf)
        self.backend_name, self.backend, self.hub, self.kernel = choose_backend(
            self.config, self.identity
        )
        log.info("discovery controllers through the %s backend", self.backend_name)
        self.published = AsyncValue(StafdSnapshot())
        self.entry_budget = EntryBudget()
        self.store = RestartStore(Path(opts.state_dir) / FILE_NAME, self.published)
        note_upstream_state(opts.state_dir, "stafd")  # upstream's pickle: say once it is ignored
        self.mdns_snapshot: Callable[[], dict[str, Any]] = dict
        self.inbox_send, self.inbox = trio.open_memory_channel[FinderMsg](4096)
        # the kernel's uevents -> the hub (kernel backend); kept across restarts of either end
        self.uevent_send, self.uevent_recv = trio.open_memory_channel[Any](10_000)
        self.report = SupervisionReport()
        self.root: RunningTree | None = None

    def info(self) -> dict[str, Any]:
        zeroconf = self.mdns_snapshot()
        return {
            "version": __version__,
            "tron": self.tron.get(),
            "log-level": self.tron.level_name(),
            "hostnqn": self.identity.hostnqn,
            "hostid": str(uuid.UUID(bytes=self.identity.hostid)),
            "hostkey": self.sysconf.hostkey or "",
            "symname": self.sysconf.symname or "",
            "last known config file": str(self.store.path),
            **upstream_status_keys(),
            "dc-backend": self.backend_name,
            "zeroconf": zeroconf,
            # upstream's section (Avahi's); our browser is in-process and needs no wake-up
            "avahi": {"avahi wake up timer": IDLE_TIMER, "service types": [], "services": {}}
            | zeroconf,
            "supervision": self.report.as_dict(),  # ours: the tree's health, crash loops
        }

    def supervision_tree(self) -> Tree:
        """stafd's actors, what each gets back when restarted, and what restarts with what."""
        discovery = Tree("discovery", (
            Child("finder", self.run_finder, needs="its inbox (kept); the running config; "
                  "the DCs as last published, cached log pages included"),
            Child("mdns", self.run_mdns, needs="the finder's inbox; browses afresh, so a "
                  "restarted finder hears every announcement again (idle when zeroconf is off)"),
        ), Strategy.REST_FOR_ONE)  # fmt: skip
        uevents = Tree("uevents", (
            Child("hub", self.run_hub, needs="its channel (kept); the DCs' subscriptions"),
            Child("monitor", self.run_uevent_monitor, needs="the hub's channel (kept); "
                  "resyncs from sysfs on start, so every DC refetches what a crash lost"),
        ), Strategy.REST_FOR_ONE)  # fmt: skip
        children: list[Child | Tree] = [uevents] if self.hub is not None else []
        children += [
            discovery,
            Child("dbus", self.run_dbus, needs="the published snapshot and info (kept)"),
            Child("watchdog", self.run_watchdog, Restart.TRANSIENT, needs="nothing"),
        ]
        # a subtree that gives up is one crash here; a few of those within 2 minutes mean
        # restarting cannot help: stafd exits 1 and systemd's Restart=on-failure takes over
        return Tree("stafd", tuple(children), intensity=3, period=120.0)

    async def run_finder(self, task_status: trio.TaskStatus[Any]) -> None:
        finder = Finder(
            config=self.config,
            host_nqn=self.identity.hostnqn,
            dc_factory=self.dc_actor,
            published=self.published,
            state_store=self.store,
            nbft_dir=self.opts.nbft_dir,
        )
        await finder.run(self.inbox, self.inbox_send, task_status=task_status)

    async def run_dbus(self, task_status: trio.TaskStatus[Any]) -> None:
        await run_stafd_dbus(snapshot=self.published, info=self.info, tron=self.tron,
                             address=self.opts.bus_address, task_status=task_status)  # fmt: skip

    async def run_watchdog(self, task_status: trio.TaskStatus[Any]) -> None:
        task_status.started()
        await self.notifier.run_watchdog()  # returns at once without a systemd watchdog

    async def run_hub(self, task_status: trio.TaskStatus[Any]) -> None:
        assert self.hub is not None
        task_status.started()
        await self.hub.run(self.uevent_recv)

    async def run_uevent_monitor(self, task_status: trio.TaskStatus[Any]) -> None:
        from stas.actors.uevents import run_uevent_monitor

        await run_uevent_monitor(self.uevent_send, resync=self.kernel.list_controllers,
                                 task_status=task_status)  # fmt: skip

    def _published_status(self, tid: Tid) -> DcStatus | None:
        return next((dc for dc in self.published.value.dcs if dc.tid == tid), None)

    async def dc_actor(
        self,
        wanted: DcWanted,
        updates: trio.MemorySendChannel[DcUpdate],
        initial: DcStatus | None,
    ) -> None:
        """One DC actor run. A restart starts from the DC as last published (its newest log
        page); a crash is shown on D-Bus at once as state 'failed', before it reaches the
        finder's supervisor (restart, or a cool-off when it keeps crashing)."""
        # the kernel keeps persistent connections when stafd stops; userspace ones always close
        persistent = self.backend_name == "userspace" or self.config.persistent_connections
        settings = DcSettings(
            persistent=persistent,
            connection=connection_params(self.config, self.sysconf.hostkey),
            entries=self.entry_budget,  # one cap on cached entries across all DCs
            identity=self.identity,  # a reload never changes a running DC's identity
        )
        start_from = self._published_status(wanted.tid) or initial
        try:
            await run_dc_actor(
                wanted, updates, backend=self.backend, settings=settings, initial=start_from
            )
        except Exception as exc:
            failed = failed_status(self._published_status(wanted.tid) or start_from, wanted, exc)
            gone = (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError)
            with contextlib.suppress(*gone):  # the finder is busy or gone: it shows the DC again
                updates.send_nowait(DcUpdate(failed))
            raise

    async def run_mdns(self, task_status: trio.TaskStatus[Any]) -> None:
        """The mDNS browser while ``zeroconf`` is enabled; idle otherwise (a reload that
        switches it restarts this child)."""
        if not self.config.zeroconf:
            task_status.started()
            await trio.sleep_forever()
        from stas.actors.mdns import run_mdns_browser  # zeroconf is imported only when used

        kwargs: dict[str, Any] = {}
        if self.opts.mdns_interfaces:
            kwargs["interfaces"] = list(self.opts.mdns_interfaces)
        try:
            async with self.inbox_send.clone() as send, trio.open_nursery() as nursery:
                browser = await nursery.start(partial(run_mdns_browser, send, **kwargs))
                self.mdns_snapshot = browser.snapshot
                task_status.started()
        finally:
            self.mdns_snapshot = dict

    async def reload(self) -> None:
        self.notifier.reloading()
        try:
            self.config, self.sysconf = load_config(self.opts)
        except ConfigError as exc:
            log.error("reload: %s; keeping the running configuration", exc)
            self.notifier.ready()
            return
        self.tron.set(self.opts.tron or self.config.tron)
        self.identity = host_identity(self.sysconf)
        # connections made from now on register with the new host ID / symbolic name
        if self.backend_name == "userspace":
            self.backend = attrs.evolve(self.backend, host=self.identity)
        else:
            self.backend.identity = self.identity
        await self.inbox_send.send(StafdConfigChanged(self.config, self.identity.hostnqn))
        log.info("configuration reloaded from %s", self.opts.conf_file)
        self.notifier.ready()

    async def run(self) -> None:
        with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                self.root = await nursery.start(
                    partial(run_tree, self.supervision_tree(), self.report)
                )
                self.notifier.ready(f"{len(self.published.value.dcs)} discovery controllers")
                log.info("stafd %s ready (host NQN %s)", __version__, self.identity.hostnqn)
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        was_on = self.config.zeroconf
                        await self.reload()
                        if self.config.zeroconf != was_on:
                            await self.root.restart_child("discovery/mdns")
                        continue
                    log.info("%s: stopping", signal.Signals(signum).name)
                    self.notifier.stopping()
                    nursery.cancel_scope.cancel()
                    break


def run_stafd(opts: StafdOptions, tron: TronControl, *, clock: trio.abc.Clock | None = None) -> int:
    """Run until stopped; returns the exit code. Only bugs raise."""
    notifier = Notifier()
    try:
        daemon = Stafd(opts, tron, notifier)
        trio.run(daemon.run, clock=clock)
    except FatalError as exc:
        log.error("%s", exc)
        return 1
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
        first = dbus.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        log.error("D-Bus: %s", first)
        return 1
    except DBusError as exc:
        log.error("D-Bus: %s", exc)
        return 1
    return 0
