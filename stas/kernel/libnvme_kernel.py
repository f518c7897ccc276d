"""The real Kernel: connects through /dev/nvme-fabrics, reads sysfs per device, deletes via sysfs.

Scale (issue 8): a connect costs the same at 3 or 3,000 controllers. It is one write of the
validated option string to ``/dev/nvme-fabrics`` (the kernel answers ``instance=N``), then a
read of ``nvmeN``'s own attributes. The whole of ``/sys/class/nvme`` is read only by
``list_controllers`` (stacd's start and the uevent monitor's resync). libnvme is not on this
path: every ``nvme.root()`` of its bindings runs ``nvme_scan()``, which reads every
controller, subsystem, namespace and PCI slot of the host, so a root per connect made a cold
start quadratic (~25 attribute opens per existing controller per connect, measured at 50).

libnvme is still available (``use_libnvme=True``), and there each connect uses its own root
rather than one shared root: libnvme's object tree is not thread-safe, and connects run in
parallel with the GIL released. SWIG crash workaround: objects are released explicitly, ctrl
then host then root; freeing a root before its ctrl (local-variable or garbage-collector
order, or a frame kept alive by a traceback) crashes the SWIG bindings (seen in the VM), and a
ctrl whose connect failed is never freed at all (``_FAILED_CONNECTS``). The bindings (1.16)
also silently drop ``queue_size`` and ``fast_io_fail_tmo`` from the config dict, so a request
with either is written to ``/dev/nvme-fabrics`` directly even there.

Blocking calls run in worker threads behind one CapacityLimiter per instance (bounded,
parallel connects); sysfs reads and deletes have a limiter each, so a connect storm against
unreachable targets never delays a disconnect or a resync, nor do 16 deletes a sysfs read.

Memory (issue 8: RSS <= 25 MB): once no connect is in flight, the heap that the burst freed
is handed back to the kernel (``malloc_trim``); glibc otherwise keeps it resident.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from stas.kernel import options as opt
from stas.kernel.api import ConnectRequest, KernelController, KernelError
from stas.kernel.fabrics import FABRICS_DEV, add_ctrl, read_capabilities
from stas.kernel.keyring import KeyringError
from stas.kernel.libnvme_loader import load_libnvme
from stas.kernel.sysfs import (
    SYSFS_NVME,
    Opener,
    is_device_name,
    open_attr,
    read_controllers,
    read_device,
)
from stas.kernel.tls import resolve_tls

log = logging.getLogger("stas.kernel")
# The one deliberate piece of module state: libnvme may already have released parts of a
# ctrl whose connect failed, and freeing it again corrupts the heap. Kept here, not on an
# instance, so that no garbage collection of a LibnvmeKernel can ever free them.
_FAILED_CONNECTS: list[tuple[Any, Any, Any]] = []

# libnvme's nvme_errno_to_string() texts (ENVME_CONNECT_*) for the kernel's write errors.
LIBNVME_ERRORS = {
    "already connected": errno.EALREADY,
    "Existing controller connection": errno.EALREADY,
    "invalid arguments/configuration": errno.EINVAL,
    "hostnqn already in use": errno.EADDRINUSE,
    "controller is gone": errno.ENODEV,
    "not supported": errno.EOPNOTSUPP,
    "connection refused": errno.ECONNREFUSED,
    "cannot assign requested address": errno.EADDRNOTAVAIL,
    "failed to open nvme-fabrics device": errno.ENOENT,
    "failed to write to nvme-fabrics device": errno.EIO,
}
# Options the bindings' config dict cannot carry (checked against libnvme 1.16.2).
DIRECT_ONLY = ("queue_size", "fast_io_fail_tmo")


def libnvme_config(req: ConnectRequest) -> dict[str, Any]:
    """libnvme's ``nvme_fabrics_config`` as the bindings take it (a dict)."""
    cfg: dict[str, Any] = {
        "hdr_digest": req.hdr_digest,
        "data_digest": req.data_digest,
        "disable_sqflow": req.disable_sqflow,
        "duplicate_connect": req.duplicate_connect,
    }
    optional = {
        "keep_alive_tmo": req.kato,
        "nr_io_queues": req.nr_io_queues,
        "nr_write_queues": req.nr_write_queues,
        "nr_poll_queues": req.nr_poll_queues,
        "reconnect_delay": req.reconnect_delay,
        "ctrl_loss_tmo": req.ctrl_loss_tmo,
        "tos": req.tos,
    }
    cfg.update({k: v for k, v in optional.items() if v is not None})
    return cfg


def needs_direct_write(req: ConnectRequest) -> bool:
    return any(getattr(req, name) is not None for name in DIRECT_ONLY)


def libnvme_errno(exc: BaseException) -> int | None:
    """The errno behind a bindings exception (they carry only libnvme's message text)."""
    if isinstance(exc, OSError):
        return exc.errno
    text = str(exc).strip()
    for known, code in LIBNVME_ERRORS.items():
        if text.lower() == known.lower():
            return code
    if "already" in text.lower():
        return errno.EALREADY
    for code in sorted(errno.errorcode):  # below 1000 libnvme reports strerror(errno)
        if os.strerror(code) == text:
            return code
    return None


def trim_heap() -> bool:
    """Give the free pages of the C heap back to the kernel (glibc's ``malloc_trim(0)``,
    under a millisecond); False where there is no such call (another C library)."""
    from stas.kernel.libc import process_libc

    try:
        return bool(process_libc().malloc_trim(0))
    except (OSError, AttributeError):
        return False


def from_request(device: str, req: ConnectRequest) -> KernelController:
    """What we know of a new controller that sysfs no longer shows (it went away at once)."""
    return KernelController(
        device=device,
        transport=req.transport,
        traddr=req.traddr,
        trsvcid=req.trsvcid,
        subsysnqn=req.subsysnqn,
        host_traddr=req.host_traddr,
        host_iface=req.host_iface,
        hostnqn=req.hostnqn,
        hostid=req.hostid,
        cntrltype="discovery" if req.discovery else "",
    )


class LibnvmeKernel:
    """Implements ``stas.kernel.api.Kernel`` on the running Linux kernel."""

    def __init__(
        self,
        *,
        max_threads: int = 8,
        sysfs: Path = SYSFS_NVME,
        fabrics: str = FABRICS_DEV,
        nvme: Any = None,
        capabilities: frozenset[str] | None = None,
        use_libnvme: bool = False,
        opener: Opener = open_attr,
        trim: Callable[[], object] = trim_heap,
    ) -> None:
        self._use_libnvme = use_libnvme
        self._nvme: Any = (nvme or load_libnvme()) if use_libnvme else None  # SWIG: untyped
        self._sysfs = sysfs
        self._fabrics = fabrics
        self._opener = opener
        self._limiter = trio.CapacityLimiter(max_threads)
        self._sysfs_limiter = trio.CapacityLimiter(4)
        self._delete_limiter = trio.CapacityLimiter(16)  # stacd's deletes overlap: not the reads'
        self._caps = read_capabilities(fabrics) if capabilities is None else capabilities
        self._trim = trim
        self._connecting = 0  # connects in flight: the heap is trimmed when none is left
        # sys.conf's [Host] key: the DH-HMAC-CHAP secret of connects that name none
        # (libnvme's host-level key in upstream); stacd sets it at start and on reload.
        self.host_key: str | None = None

    def capabilities(self) -> frozenset[str]:
        return self._caps

    def _connect_blocking(self, req: ConnectRequest) -> str:
        """Create the controller; its device name comes back from the kernel (no scan)."""
        if not self._use_libnvme or needs_direct_write(req) or req.tls:
            instance, _cntlid = add_ctrl(req.option_string(redact=False), self._fabrics)
            return f"nvme{instance}"
        nvme = self._nvme
        root = nvme.root()
        host = ctrl = None
        try:
            host = nvme.host(root, hostnqn=req.hostnqn, hostid=req.hostid or None)
            ctrl = nvme.ctrl(
                root,
                subsysnqn=req.subsysnqn,
                transport=req.transport,
                traddr=req.traddr or None,
                host_traddr=req.host_traddr or None,
                host_iface=req.host_iface or None,
                trsvcid=req.trsvcid or None,
            )
            if req.discovery:
                ctrl.discovery_ctrl = True
            if req.dhchap_secret:
                ctrl.dhchap_host_key = req.dhchap_secret  # -> dhchap_secret=
            if req.dhchap_ctrl_secret:
                ctrl.dhchap_key = req.dhchap_ctrl_secret  # -> dhchap_ctrl_secret=
            try:
                ctrl.connect(host, libnvme_config(req))
            except Exception:
                _FAILED_CONNECTS.append((root, host, ctrl))
                raise
            return str(ctrl.name)
        finally:
            del ctrl  # children before their root, always
            del host
            del root

    async def connect(self, req: ConnectRequest) -> KernelController:
        self._connecting += 1
        try:
            return await self._connect(req)
        finally:
            self._connecting -= 1
            if self._connecting == 0:  # a burst is over (or a lone connect)
                self._trim()

    async def _connect(self, req: ConnectRequest) -> KernelController:
        if req.dhchap_secret is None and self.host_key:
            req = attrs.evolve(req, dhchap_secret=self.host_key)  # validated again
        where = f"{req.transport} {req.traddr}" + (f":{req.trsvcid}" if req.trsvcid else "")
        what = f"connect {req.subsysnqn} at {where}"
        log.debug("%s: %s", what, req.option_string())
        try:
            if req.tls:  # keyring name and configured PSK -> serials (stas.kernel.tls)
                req = await trio.to_thread.run_sync(resolve_tls, req, limiter=self._limiter)
            name = await trio.to_thread.run_sync(self._connect_blocking, req, limiter=self._limiter)
        except KeyringError as exc:
            raise KernelError(f"{what}: {exc.strerror}", exc.errno or None) from exc
        except Exception as exc:  # the bindings raise plain RuntimeError with libnvme's text
            text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            code = libnvme_errno(exc)
            hint = (opt.tls_failure_hint(code) if req.tls else "") or opt.auth_failure_hint(code)
            raise KernelError(f"{what}: {text}" + (f" ({hint})" if hint else ""), code) from exc
        ctrl = await self.controller(name)  # that device's attributes only
        return ctrl if ctrl is not None else from_request(name, req)

    async def disconnect(self, device: str) -> None:
        if not is_device_name(device):
            raise KernelError(f"disconnect {device!r}: not an nvme controller name", errno.EINVAL)
        path = self._sysfs / device / "delete_controller"

        def write() -> None:
            with open(path, "w") as f:
                f.write("1")

        try:
            await trio.to_thread.run_sync(write, limiter=self._delete_limiter)
        except FileNotFoundError as exc:
            raise KernelError(f"disconnect {device}: no such controller", errno.ENODEV) from exc
        except OSError as exc:
            raise KernelError(f"disconnect {device}: {exc.strerror or exc}", exc.errno) from exc

    async def list_controllers(self) -> list[KernelController]:
        return await trio.to_thread.run_sync(
            read_controllers, self._sysfs, self._opener, limiter=self._sysfs_limiter
        )

    async def controller(self, device: str) -> KernelController | None:
        return await trio.to_thread.run_sync(
            read_device, device, self._sysfs, self._opener, limiter=self._sysfs_limiter
        )
