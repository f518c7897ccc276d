"""In-memory stand-in for the kernel: controllers, connects, disconnects, uevents, failures.

Used by the deterministic stacd tests. It behaves like the kernel where stacd can tell:
device names ``nvmeN`` allocated lowest-free first, ``EALREADY`` for a duplicate connect
(unless the request sets ``duplicate_connect``), an ``add`` uevent for a new controller, a
``remove`` uevent when one goes away, ``change`` uevents for AENs and NVME_EVENTs.

Crash tests need the "kernel" to outlive a SIGKILLed stacd, as the real one does: with
``$STAS_FAKE_KERNEL_FILE`` (or ``persist``) naming a JSON file, the controllers and a
journal of adds/removes are loaded at start and rewritten atomically on every change.
"""

from __future__ import annotations

import errno
import heapq
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeAlias

import attrs
import trio

from stas.kernel.api import (
    ConnectRequest,
    KernelController,
    KernelError,
    Uevent,
    controller_matches,
    match_args,
)

PERSIST_ENV = "STAS_FAKE_KERNEL_FILE"
_Queued: TypeAlias = "tuple[str, KernelController, dict[str, str] | None]"


class UeventQueue:
    """The fake's uevents, read like a Trio receive channel (``receive``, ``receive_nowait``,
    ``async for``). Queued as (action, controller, extra environment) and made a ``Uevent``
    when read: the real kernel keeps unread events in its socket buffer, not in stacd, and
    8,000 queued ``Uevent``s (path, environment dict) were 2.2 MB of stacd in benchmark 4."""

    def __init__(self, size: int) -> None:
        self._send, self._receive = trio.open_memory_channel[_Queued](size)

    def put(self, action: str, ctrl: KernelController, env: dict[str, str] | None) -> None:
        self._send.send_nowait((action, ctrl, env))

    def receive_nowait(self) -> Uevent:
        return _uevent(*self._receive.receive_nowait())

    async def receive(self) -> Uevent:
        return _uevent(*await self._receive.receive())

    def __aiter__(self) -> UeventQueue:
        return self

    async def __anext__(self) -> Uevent:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


def _uevent(action: str, ctrl: KernelController, env: dict[str, str] | None) -> Uevent:
    base = {"NVME_TRTYPE": ctrl.transport, "NVME_TRADDR": ctrl.traddr, "NVME_TRSVCID": ctrl.trsvcid}
    devpath = f"/devices/virtual/nvme-fabrics/ctl/{ctrl.device}"
    return Uevent(action, devpath, "nvme", base | env if env else base)


class FakeKernel:
    """Implements ``stas.kernel.api.Kernel`` in memory."""

    def __init__(
        self,
        capabilities: frozenset[str] = frozenset({"host_iface", "discovery"}),
        persist: Path | None = None,
    ) -> None:
        self.controllers: dict[str, KernelController] = {}
        self.connect_log: list[ConnectRequest] = []
        self.disconnect_log: list[str] = []
        self.failures: list[tuple[Callable[[ConnectRequest], bool], int, str]] = []
        self.delay = 0.0
        self.disconnect_delay = 0.0
        self._caps = capabilities
        # subsystem NQN -> its devices: the one device's name (the controller's own string),
        # a tuple only when several; a set and a key tuple per controller were 290 B each.
        self._by_nqn: dict[str, str | tuple[str, ...]] = {}
        self._free: list[int] = []
        self._next = 0
        self.events = UeventQueue(100_000)
        env_file = os.environ.get(PERSIST_ENV)
        self._persist = persist or (Path(env_file) if env_file else None)
        self.journal: list[dict[str, Any]] = []  # persisted adds/removes, with wall-clock times
        if self._persist is not None and self._persist.exists():
            doc = json.loads(self._persist.read_text())
            self.journal = doc["journal"]
            for fields in doc["controllers"]:
                ctrl = KernelController(**fields)
                self.controllers[ctrl.device] = ctrl  # already there: no uevent
                self._index(ctrl)

    # --- the Kernel protocol -------------------------------------------------------------------

    def capabilities(self) -> frozenset[str]:
        return self._caps

    async def connect(self, req: ConnectRequest) -> KernelController:
        self.connect_log.append(req)
        if self.delay:
            await trio.sleep(self.delay)
        else:
            await trio.lowlevel.checkpoint()
        for i, (match, err, text) in enumerate(self.failures):
            if match(req):
                del self.failures[i]
                raise KernelError(f"connect {req.subsysnqn} at {req.traddr}: {text}", err)
        for device in () if req.duplicate_connect else self._devices(req.subsysnqn):
            ctrl = self.controllers[device]
            same = (ctrl.transport, ctrl.traddr, ctrl.trsvcid) == (req.transport, req.traddr,
                                                                   req.trsvcid)  # fmt: skip
            if same and controller_matches(ctrl, **match_args(req)):
                raise KernelError(
                    f"connect {req.subsysnqn} at {req.traddr}: already connected as {device}",
                    errno.EALREADY,
                )
        return self._add(
            KernelController(
                device=self._free_name(),
                transport=req.transport,
                traddr=req.traddr,
                trsvcid=req.trsvcid,
                subsysnqn=req.subsysnqn,
                host_traddr=req.host_traddr,
                host_iface=req.host_iface,
                src_addr=req.host_traddr if req.transport in ("tcp", "rdma") else "",
                hostnqn=req.hostnqn,
                hostid=req.hostid,
                cntrltype="discovery" if req.discovery else "io",
                state="live",
                has_namespaces=not req.discovery,
            )
        )

    async def disconnect(self, device: str) -> None:
        if self.disconnect_delay:  # the kernel's teardown takes time; deletes overlap
            await trio.sleep(self.disconnect_delay)
        else:
            await trio.lowlevel.checkpoint()
        self.disconnect_log.append(device)
        if device not in self.controllers:
            raise KernelError(f"disconnect {device}: no such controller", errno.ENODEV)
        self.remove(device)

    async def list_controllers(self) -> list[KernelController]:
        await trio.lowlevel.checkpoint()
        return sorted(self.controllers.values(), key=lambda c: int(c.device[4:]))

    async def controller(self, device: str) -> KernelController | None:
        await trio.lowlevel.checkpoint()
        return self.controllers.get(device)

    # --- test controls -------------------------------------------------------------------------

    def fail_next(
        self,
        err: int = errno.EIO,
        *,
        n: int = 1,
        text: str = "I/O error",
        when: Callable[[ConnectRequest], bool] = lambda req: True,
    ) -> None:
        """The next ``n`` connects matching ``when`` fail with ``err``."""
        self.failures += [(when, err, text)] * n

    def fail_traddr(
        self, traddr: str, err: int = errno.ECONNREFUSED, *, n: int = 1, text: str = ""
    ) -> None:
        """The next ``n`` connects to ``traddr`` fail with ``err``."""
        self.fail_next(
            err, n=n, text=text or os.strerror(err), when=lambda req: req.traddr == traddr
        )

    def add_external(self, **fields: object) -> KernelController:
        """A connection someone else made (nvme-cli, a previous stacd)."""
        return self._add(KernelController(device=self._free_name(), state="live", **fields))  # type: ignore[arg-type]

    def remove(self, device: str) -> None:
        """The kernel deleted the controller (e.g. ctrl-loss-tmo expired)."""
        if device not in self.controllers:
            raise KeyError(f"FakeKernel.remove: no controller {device}")
        ctrl = self.controllers.pop(device)
        rest = tuple(d for d in self._devices(ctrl.subsysnqn) if d != device)
        if not rest:
            self._by_nqn.pop(ctrl.subsysnqn, None)
        else:
            self._by_nqn[ctrl.subsysnqn] = rest[0] if len(rest) == 1 else rest
        heapq.heappush(self._free, int(device[4:]))
        self._record("remove", ctrl)
        self._emit("remove", ctrl)

    def emit_aen(self, device: str, aen: int = 0x70F002) -> None:
        self._emit("change", self.controllers[device], NVME_AEN=f"0x{aen:x}")

    def emit_rediscover(self, device: str) -> None:
        self._emit("change", self.controllers[device], NVME_EVENT="rediscover")

    # --- internals -----------------------------------------------------------------------------

    def _free_name(self) -> str:
        """Lowest free instance number, like the kernel's IDA (a heap keeps it O(log n))."""
        while self._free and f"nvme{self._free[0]}" in self.controllers:
            heapq.heappop(self._free)
        if self._free:
            return f"nvme{heapq.heappop(self._free)}"
        while f"nvme{self._next}" in self.controllers:
            self._next += 1
        self._next += 1
        return f"nvme{self._next - 1}"

    def _add(self, ctrl: KernelController) -> KernelController:
        self.controllers[ctrl.device] = ctrl
        self._index(ctrl)
        self._record("add", ctrl)
        self._emit("add", ctrl)
        return ctrl

    def _devices(self, subsysnqn: str) -> tuple[str, ...]:
        found = self._by_nqn.get(subsysnqn, ())
        return (found,) if isinstance(found, str) else found

    def _index(self, ctrl: KernelController) -> None:
        old = self._devices(ctrl.subsysnqn)
        self._by_nqn[ctrl.subsysnqn] = (*old, ctrl.device) if old else ctrl.device

    def _record(self, action: str, ctrl: KernelController) -> None:
        """Journal the change and rewrite the file (temp + rename: a kill leaves old or new)."""
        if self._persist is None:
            return
        self.journal.append({"t": time.time(), "action": action, **attrs.asdict(ctrl)})
        doc = {
            "controllers": [attrs.asdict(c) for c in self.controllers.values()],
            "journal": self.journal,
        }
        tmp = self._persist.with_name(self._persist.name + ".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self._persist)

    def _emit(self, action: str, ctrl: KernelController, **env: str) -> None:
        self.events.put(action, ctrl, env or None)

    def state(self) -> set[tuple[str, str, str]]:
        """(subsysnqn, traddr, trsvcid) of every controller: handy in assertions."""
        return {(c.subsysnqn, c.traddr, c.trsvcid) for c in self.controllers.values()}

    def evolve(self, device: str, **changes: object) -> None:
        self.controllers[device] = attrs.evolve(self.controllers[device], **changes)  # type: ignore[arg-type]
