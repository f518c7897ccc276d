"""The real Kernel: connects through libnvme, reads state from sysfs, deletes via sysfs.

libnvme calls block, so they run in worker threads behind one CapacityLimiter (bounded,
parallel connects). Each connect uses its own libnvme root, because libnvme's object tree is
not safe to share between threads. Its objects are released explicitly, ctrl then host then
root: freeing a root before its ctrl (local-variable or garbage-collector order, or a frame
kept alive by a traceback) crashes the SWIG bindings (seen in the VM).
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import Any

import trio

from stas.kernel.api import ConnectRequest, KernelController, KernelError
from stas.kernel.fabrics import read_capabilities
from stas.kernel.libnvme_loader import load_libnvme
from stas.kernel.sysfs import SYSFS_NVME, read_controller, read_controllers

log = logging.getLogger("stas.kernel")
_FAILED_CONNECTS: list[tuple[Any, Any, Any]] = []  # see _connect_blocking: never freed


def libnvme_config(req: ConnectRequest) -> dict[str, Any]:
    """libnvme's ``nvme_fabrics_config`` as the bindings take it (a dict)."""
    cfg: dict[str, Any] = {
        "hdr_digest": req.hdr_digest,
        "data_digest": req.data_digest,
        "disable_sqflow": req.disable_sqflow,
    }
    optional = {
        "keep_alive_tmo": req.kato,
        "queue_size": req.queue_size,
        "nr_io_queues": req.nr_io_queues,
        "nr_write_queues": req.nr_write_queues,
        "nr_poll_queues": req.nr_poll_queues,
        "reconnect_delay": req.reconnect_delay,
        "ctrl_loss_tmo": req.ctrl_loss_tmo,
        "fast_io_fail_tmo": req.fast_io_fail_tmo,
        "tos": req.tos,
    }
    cfg.update({k: v for k, v in optional.items() if v is not None})
    return cfg


class LibnvmeKernel:
    """Implements ``stas.kernel.api.Kernel`` on the running Linux kernel."""

    def __init__(self, *, max_threads: int = 8, sysfs: Path = SYSFS_NVME, nvme: Any = None) -> None:
        self._nvme = nvme or load_libnvme()
        self._sysfs = sysfs
        self._limiter = trio.CapacityLimiter(max_threads)
        self._caps = read_capabilities()

    def capabilities(self) -> frozenset[str]:
        return self._caps

    def _connect_blocking(self, req: ConnectRequest) -> str:
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
                ctrl.dhchap_host_key = req.dhchap_secret
            if req.dhchap_ctrl_secret:
                ctrl.dhchap_key = req.dhchap_ctrl_secret
            try:
                ctrl.connect(host, libnvme_config(req))
            except Exception:
                # libnvme may already have released parts of a ctrl whose connect failed;
                # freeing it again corrupts the heap, so these few objects are never freed.
                _FAILED_CONNECTS.append((root, host, ctrl))
                raise
            return str(ctrl.name)
        finally:
            del ctrl  # children before their root, always
            del host
            del root

    async def connect(self, req: ConnectRequest) -> KernelController:
        what = f"connect {req.subsysnqn} at {req.transport} {req.traddr}:{req.trsvcid}"
        try:
            name = await trio.to_thread.run_sync(self._connect_blocking, req, limiter=self._limiter)
        except Exception as exc:  # the bindings raise plain Exception with libnvme's text
            text = str(exc)
            code = errno.EALREADY if "already" in text.lower() else None
            raise KernelError(f"{what}: {text}", code) from exc
        ctrl = read_controller(self._sysfs / name)
        return ctrl if ctrl is not None else KernelController(device=name)

    async def disconnect(self, device: str) -> None:
        path = self._sysfs / device / "delete_controller"

        def write() -> None:
            path.write_text("1")

        try:
            await trio.to_thread.run_sync(write, limiter=self._limiter)
        except OSError as exc:
            raise KernelError(f"disconnect {device}: {exc.strerror or exc}", exc.errno) from exc

    async def list_controllers(self) -> list[KernelController]:
        return await trio.to_thread.run_sync(read_controllers, self._sysfs, limiter=self._limiter)
