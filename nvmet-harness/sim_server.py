"""The Trio side of the simulator: TCP listeners, one task per host, KATO, AEN fan-out.

``open_simulator`` runs a userspace NVMe/TCP discovery controller on real sockets so stafd
and tests work on machines without nvmet. All timing uses Trio deadlines, so tests drive
keep-alive expiry with MockClock.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import math
import os
import socket
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import attrs
import trio
from nvmet_config import NvmetConf
from sim_controller import DiscoveryControllerSession, dctype_from_label
from sim_faults import FaultBudget, Faults
from sim_mdns import Announcement, announce
from sim_model import Registration, SimModel

log = logging.getLogger("nvmet-sim")

RECEIVE_SIZE = 65536
MAX_CONTROL_LINE = 4096


class SimulatorError(Exception):
    """The simulator cannot start (address in use, control socket taken...)."""


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@attrs.define(eq=False)
class _Conn:
    """Book-keeping for one host connection (owned by its task)."""

    session: DiscoveryControllerSession
    peer: str
    outbox: trio.MemorySendChannel[bytes]


class Simulator:
    """Handle on a running simulator: endpoints, model changes, fault switches."""

    def __init__(self, model: SimModel, dctype: str, budget: FaultBudget) -> None:
        self.model = model
        self._dctype = dctype
        self._budget = budget
        self._endpoints: dict[int, tuple[str, int]] = {}
        self._conns: set[_Conn] = set()
        self._next_cntlid = 1
        self.accepted = 0  # host connections served (refused ones not counted)
        self.history: deque[DiscoveryControllerSession] = deque(maxlen=256)  # newest last
        model.subscribe(self._on_change)

    # -- public ----------------------------------------------------------------------------
    def endpoint(self, port_id: int) -> tuple[str, int]:
        """(address, TCP port) that port ``port_id`` listens on."""
        try:
            return self._endpoints[port_id]
        except KeyError:
            raise ValueError(f"unknown port {port_id}") from None

    @property
    def endpoints(self) -> dict[int, tuple[str, int]]:
        return dict(self._endpoints)

    @property
    def connections(self) -> int:
        return len(self._conns)

    @property
    def registrations(self) -> dict[str, Registration]:
        return self.model.registrations

    @property
    def faults(self) -> Faults:
        return self._budget.faults

    def set_faults(self, faults: Faults) -> None:
        self._budget.set(faults)

    async def link(self, port_id: int, nqn: str) -> None:
        self.model.link(port_id, nqn)
        await trio.lowlevel.checkpoint()

    async def unlink(self, port_id: int, nqn: str) -> None:
        self.model.unlink(port_id, nqn)
        await trio.lowlevel.checkpoint()

    # -- AEN fan-out ---------------------------------------------------------------------------
    def _on_change(self) -> None:
        storm = self._budget.take_aen_storm()
        log.info("discovery log changed (GENCTR %d)", self.model.genctr)
        for conn in list(self._conns):
            wire = conn.session.start_storm(storm) if storm else conn.session.notify_log_change()
            if wire:
                with suppress(trio.ClosedResourceError, trio.BrokenResourceError):
                    conn.outbox.send_nowait(wire)

    # -- listeners -----------------------------------------------------------------------------
    async def _listen(
        self, conf: NvmetConf, *, ephemeral: bool
    ) -> dict[int, list[trio.SocketListener]]:
        """Open every TCP port of the conf (before serving, so errors are plain)."""
        opened: dict[int, list[trio.SocketListener]] = {}
        try:
            for port in conf.ports:
                if str(port.trtype).lower() != "tcp":
                    log.warning("port %d: transport %s not simulated", port.id, port.trtype)
                    continue
                wanted = 0 if ephemeral else int(port.trsvcid)
                try:
                    listeners = await trio.open_tcp_listeners(wanted, host=port.traddr)
                except OSError as exc:
                    where = f"{_bracket(port.traddr)}:{wanted}"
                    reason = exc.strerror or str(exc)
                    raise SimulatorError(
                        f"cannot listen on {where} (port {port.id}): {reason}"
                    ) from None
                opened[port.id] = listeners
                actual = listeners[0].socket.getsockname()[1]
                self._endpoints[port.id] = (port.traddr, actual)
                self.model.set_endpoint(port.id, port.traddr, actual)
        except BaseException:
            for listeners in opened.values():
                for listener in listeners:
                    await listener.aclose()
            raise
        return opened

    # -- one host connection -------------------------------------------------------------------
    async def _serve_connection(self, port_id: int, stream: trio.SocketStream) -> None:
        try:
            peer = _bracket(str(stream.socket.getpeername()[0]))
        except OSError:
            peer = "?"
        if self._budget.faults.refuse:
            log.info("port %d: refusing connection from %s (fault)", port_id, peer)
            await stream.aclose()
            return
        session = DiscoveryControllerSession(
            self.model,
            port_id,
            cntlid=self._allocate_cntlid(),
            dctype=self._dctype,
            budget=self._budget,
            clock=trio.current_time,
        )
        self.accepted += 1
        self.history.append(session)
        outbox, inbox = trio.open_memory_channel[bytes](math.inf)
        conn = _Conn(session, peer, outbox)
        self._conns.add(conn)
        log.info("port %d: connection from %s (cntlid %d)", port_id, peer, session.cntlid)
        reason = "closed"
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer, stream, inbox, nursery.cancel_scope)
                with outbox:
                    reason = await self._reader(conn, stream)
        except trio.BrokenResourceError:
            reason = "connection reset"
        finally:
            self._conns.discard(conn)
            with trio.CancelScope(shield=True):
                await stream.aclose()
            log.info("port %d: %s disconnected (%s)", port_id, peer, reason)

    async def _writer(
        self,
        stream: trio.SocketStream,
        inbox: trio.MemoryReceiveChannel[bytes],
        scope: trio.CancelScope,
    ) -> None:
        try:
            async for data in inbox:
                await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            scope.cancel()

    async def _reader(self, conn: _Conn, stream: trio.SocketStream) -> str:
        """Feed host bytes to the session until the host leaves, KATO expires or a fault."""
        session = conn.session
        commands = 0
        last_activity = trio.current_time()
        while True:
            deadline = math.inf
            if session.kato_ms:
                deadline = last_activity + session.kato_ms / 1000
            data = None
            with trio.move_on_at(deadline):
                try:
                    data = await stream.receive_some(RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return "connection reset"  # here, not in the nursery: no ExceptionGroup
            if data is None:
                return f"keep-alive timeout ({session.kato_ms} ms)"
            if not data:
                return "host closed the connection"
            for out in session.receive(data):
                if out.command is not None:
                    commands += 1
                    last_activity = trio.current_time()
                    log.info("%s: %s", conn.peer, out.summary())
                    delay = self._budget.faults.delay_s
                    if delay:
                        await trio.sleep(delay)
                if out.data:
                    conn.outbox.send_nowait(out.data)
                if out.close:
                    return out.command or "host terminated the connection"
                limit = self._budget.faults.drop_after_commands
                if limit is not None and commands >= limit:
                    return f"dropped after {commands} commands (fault)"

    def _allocate_cntlid(self) -> int:
        cntlid = self._next_cntlid
        self._next_cntlid = cntlid % 0xFFEF + 1  # 1..0xFFEF, like nvmet's dynamic range
        return cntlid

    # -- control socket ------------------------------------------------------------------------
    async def _serve_control(self, listener: trio.SocketListener) -> None:
        await trio.serve_listeners(self._control_connection, [listener])

    async def _control_connection(self, stream: trio.SocketStream) -> None:
        buf = b""
        async with stream:
            while True:
                try:
                    data = await stream.receive_some(MAX_CONTROL_LINE)
                except trio.BrokenResourceError:
                    return
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    reply = await self.control(line)
                    try:
                        await stream.send_all(json.dumps(reply).encode() + b"\n")
                    except trio.BrokenResourceError:
                        return
                if len(buf) > MAX_CONTROL_LINE:
                    await stream.send_all(b'{"ok": false, "error": "request line too long"}\n')
                    return

    async def control(self, line: bytes | str) -> dict[str, object]:
        """Handle one control request (JSON object) and return the JSON reply."""
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("request must be a JSON object")
            op = request.get("op")
            if op == "ls":
                return {"ok": True, **self.model.describe(), "connections": self.connections}
            if op in ("link", "unlink"):
                port, nqn = request.get("port"), request.get("nqn")
                if not isinstance(port, int) or not isinstance(nqn, str):
                    raise ValueError(f"{op} needs an integer 'port' and a string 'nqn'")
                await (self.link if op == "link" else self.unlink)(port, nqn)
                log.info("control: %s port %d subsystem %s", op, port, nqn)
                return {"ok": True, "genctr": self.model.genctr}
            raise ValueError(f"unknown op {op!r} (expected link, unlink or ls)")
        except ValueError as exc:  # includes json.JSONDecodeError
            return {"ok": False, "error": str(exc)}


def _open_control_listener(path: str) -> trio.SocketListener:
    """Bind the control socket; refuse to steal it from a live simulator."""
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale socket of a dead simulator
        else:
            raise SimulatorError(f"a simulator is already running at {path}")
        finally:
            probe.close()
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        raw.bind(path)
    except OSError as exc:
        raw.close()
        if exc.errno == errno.ENOENT:
            raise SimulatorError(
                f"cannot create control socket {path}: no such directory"
            ) from None
        raise SimulatorError(f"cannot create control socket {path}: {exc.strerror}") from None
    raw.listen(16)
    return trio.SocketListener(trio.socket.from_stdlib_socket(raw))


def _unwrap(group: BaseExceptionGroup) -> BaseException:
    """The single exception inside nested one-member groups (Trio wraps the block's error)."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


@asynccontextmanager
async def open_simulator(
    conf: NvmetConf,
    *,
    ephemeral: bool = False,
    dctype: str = "ddc",
    faults: Faults = Faults(),  # noqa: B008 - frozen value
    mdns: bool = False,
    control_path: str | None = None,
    model: SimModel | None = None,
) -> AsyncIterator[Simulator]:
    """Serve every TCP port of ``conf`` until the block exits.

    Errors raised inside the block come out as themselves, not wrapped in an
    ExceptionGroup by the simulator's internal nursery.
    """
    dctype_from_label(dctype)  # fail early on a bad label
    sim = Simulator(model or SimModel(conf), dctype, FaultBudget(faults))
    opened = await sim._listen(conf, ephemeral=ephemeral)
    control: trio.SocketListener | None = None
    try:
        control = _open_control_listener(control_path) if control_path else None
        async with trio.open_nursery() as nursery:
            for port_id, listeners in opened.items():
                handler = functools.partial(sim._serve_connection, port_id)
                nursery.start_soon(trio.serve_listeners, handler, listeners)
            if control is not None:
                nursery.start_soon(sim._serve_control, control)
            try:
                if mdns:
                    endpoints = sim.endpoints.items()
                    anns = [Announcement(pid, host, port) for pid, (host, port) in endpoints]
                    async with announce(anns) as infos:
                        for info in infos:
                            log.info("mDNS: announced %s port %d", info.name, info.port)
                        yield sim
                else:
                    yield sim
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        inner = _unwrap(group)
        if inner is group:
            raise
        raise inner from None
    finally:
        with trio.CancelScope(shield=True):
            for listeners in opened.values():
                for listener in listeners:
                    with suppress(Exception):
                        await listener.aclose()
            if control is not None:
                with suppress(Exception):
                    await control.aclose()
                with suppress(OSError):
                    os.unlink(control_path or "")
