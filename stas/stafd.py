"""stafd's root: configuration, identity, and every actor in one supervised Trio nursery.

Lifecycle: state restored from the JSON cache, D-Bus name acquired, then ``READY=1``; SIGHUP
re-reads stafd.conf and sys.conf (``RELOADING=1`` ... ``READY=1``; an unreadable file keeps the
running configuration); SIGTERM/SIGINT save state and stop (``STOPPING=1``).
"""

from __future__ import annotations

import logging
import os
import signal
import uuid
from collections.abc import Callable
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
from stas.config import ConfigError, ServiceConfig, SysConfig, load_service_config, load_sys_config
from stas.dbus.common import DBusError
from stas.logsetup import TronControl
from stas.messages import FinderMsg, StafdConfigChanged, StafdSnapshot
from stas.nbft import SYSFS_DIR as NBFT_DIR
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
        self.store = StateStore(Path(opts.state_dir) / FILE_NAME)
        note_upstream_state(opts.state_dir, "stafd")  # upstream's pickle: say once it is ignored
        self.mdns_snapshot: Callable[[], dict[str, Any]] = dict
        self.inbox_send, self.inbox = trio.open_memory_channel[FinderMsg](4096)

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
        }

    async def dc_actor(self, wanted: Any, updates: Any, initial: Any) -> None:
        # the kernel keeps persistent connections when stafd stops; userspace ones always close
        persistent = self.backend_name == "userspace" or self.config.persistent_connections
        settings = DcSettings(
            persistent=persistent,
            connection=connection_params(self.config, self.sysconf.hostkey),
            entries=self.entry_budget,  # one cap on cached entries across all DCs
            identity=self.identity,  # a reload never changes a running DC's identity
        )
        await run_dc_actor(
            wanted, updates, backend=self.backend, settings=settings, initial=initial
        )

    async def run_mdns(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        from stas.actors.mdns import run_mdns_browser  # zeroconf is imported only when used

        kwargs: dict[str, Any] = {}
        if self.opts.mdns_interfaces:
            kwargs["interfaces"] = list(self.opts.mdns_interfaces)
        async with trio.open_nursery() as nursery:
            browser = await nursery.start(
                lambda task_status: run_mdns_browser(
                    self.inbox_send.clone(), task_status=task_status, **kwargs
                )
            )
            self.mdns_snapshot = browser.snapshot
            task_status.started()

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
        finder = Finder(
            config=self.config,
            host_nqn=self.identity.hostnqn,
            dc_factory=self.dc_actor,
            published=self.published,
            state_store=self.store,
            nbft_dir=self.opts.nbft_dir,
        )
        with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                if self.hub is not None:
                    await self._start_uevents(nursery)
                await nursery.start(finder.run, self.inbox, self.inbox_send)
                mdns_scope = trio.CancelScope()
                if self.config.zeroconf:
                    mdns_scope = await self._start_mdns(nursery)
                await nursery.start(
                    lambda task_status: run_stafd_dbus(
                        snapshot=self.published, info=self.info, tron=self.tron,
                        address=self.opts.bus_address, task_status=task_status,
                    )
                )  # fmt: skip
                self.notifier.ready(f"{len(self.published.value.dcs)} discovery controllers")
                log.info("stafd %s ready (host NQN %s)", __version__, self.identity.hostnqn)
                nursery.start_soon(self.notifier.run_watchdog)
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        was_on = self.config.zeroconf
                        await self.reload()
                        if self.config.zeroconf and not was_on:
                            mdns_scope = await self._start_mdns(nursery)
                        elif was_on and not self.config.zeroconf:
                            mdns_scope.cancel()
                        continue
                    log.info("%s: stopping", signal.Signals(signum).name)
                    self.notifier.stopping()
                    nursery.cancel_scope.cancel()
                    break

    async def _start_uevents(self, nursery: trio.Nursery) -> None:
        from stas.actors.uevents import run_uevent_monitor

        send, receive = trio.open_memory_channel[Any](10_000)
        nursery.start_soon(self.hub.run, receive)
        await nursery.start(
            lambda task_status: run_uevent_monitor(
                send, resync=self.kernel.list_controllers, task_status=task_status
            )
        )

    async def _start_mdns(self, nursery: trio.Nursery) -> trio.CancelScope:
        scope = trio.CancelScope()

        async def runner(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await self.run_mdns(task_status=task_status)

        await nursery.start(runner)
        return scope


def run_stafd(opts: StafdOptions, tron: TronControl) -> int:
    """Run until stopped; returns the exit code. Only bugs raise."""
    notifier = Notifier()
    try:
        daemon = Stafd(opts, tron, notifier)
        trio.run(daemon.run)
    except FatalError as exc:
        log.error("%s", exc)
        return 1
    except ConfigError as exc:
        log.error("%s", exc)
        return 1
    except BaseExceptionGroup as group:
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
