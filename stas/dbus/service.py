"""Generic D-Bus object server on Trio: one object, its interfaces, and the standard ones.

The daemons describe their API as data (``stas.dbus.idl``) and supply async handlers; this
module owns everything else: name ownership, argument checks, error replies, Properties
(with PropertiesChanged, as GDBus objects emit it), Introspectable and Peer. A failing
handler costs one error reply, never the server. Two limits protect the daemon from its
callers: each caller (uid) gets its own share of concurrent calls, and no reply may exceed
``MAX_REPLY_BYTES`` (dbus-daemon drops a connection that sends a message over its own
``max_message_size``, 32 MiB by default, and the daemon would lose the bus).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio
from jeepney import (
    DBusAddress,
    HeaderFields,
    Message,
    MessageFlag,
    MessageType,
    new_error,
    new_method_return,
    new_signal,
)

from stas.dbus import common as c
from stas.dbus.admission import CallShares
from stas.dbus.binding import (
    MAX_STRING,
    CallContext,
    DBusMethodError,
    Handler,
    InterfaceImpl,
    PropertyImpl,
    UidLookup,
    bind_service,
    check_args,
    check_strings,
)
from stas.dbus.common import DBusError, DBusUnavailable
from stas.dbus.connection import BusConnection, open_bus, unwrap_single
from stas.dbus.idl import PROPERTIES, STANDARD_INTERFACES, Interface, Method, Property
from stas.dbus.introspect import node_xml, parent_node_xml

log = logging.getLogger(__name__)

MAX_CONCURRENT_CALLS = 32  # per caller: per uid, or per connection whose uid is unknown
MAX_REPLY_BYTES = 16 * 1024 * 1024  # half of dbus-daemon's default max_message_size
UID_CACHE_SIZE = 1024
MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))
NAME_FLAG_DO_NOT_QUEUE = 4
NAME_PRIMARY_OWNER, NAME_ALREADY_OWNER = 1, 4

__all__ = [
    "CallContext",
    "DBusMethodError",
    "DBusObjectServer",
    "Handler",
    "InterfaceImpl",
    "PropertyImpl",
    "bind_service",
]


def _error(msg: Message, name: str, text: str) -> Message:
    return new_error(msg, name, "s", (text,))


class DBusObjectServer:
    """Publishes one object under one well-known name and answers calls to it."""

    def __init__(
        self,
        bus_name: str,
        object_path: str,
        interfaces: Sequence[InterfaceImpl],
        *,
        address: str | None = None,
        uid_lookup: UidLookup | None = None,
        max_concurrent: int = MAX_CONCURRENT_CALLS,
        max_string: int = MAX_STRING,
        max_reply: int = MAX_REPLY_BYTES,
    ) -> None:
        for impl in interfaces:
            impl.check_complete()
        self.bus_name = bus_name
        self.object_path = object_path
        self._impls = {impl.definition.name: impl for impl in interfaces}
        self._definitions = tuple(impl.definition for impl in interfaces)
        self._standard = {iface.name: iface for iface in STANDARD_INTERFACES}
        self._address = address
        self._uid_lookup = uid_lookup or self._bus_uid_lookup
        self._uid_cache: dict[str, int | None] = {}
        # A connection's calls wait for its uid in ``by_sender``, then run in ``by_caller``.
        self._by_sender = CallShares(max_concurrent)
        self._by_caller = CallShares(max_concurrent)
        self._max_string = max_string
        self.max_reply = max_reply
        self._logged_failures: set[tuple[str, str]] = set()
        self._bus: BusConnection | None = None
        self._nursery: trio.Nursery | None = None
        # property values subscribers last heard of (per interface), taken at each connection
        self._announced: dict[str, dict[str, Any]] = {}
        self._announcing = trio.Lock()

    @property
    def connected(self) -> bool:
        return self._bus is not None

    def introspection_xml(self) -> str:
        return node_xml((*self._definitions, *STANDARD_INTERFACES))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, publish, own the name, report started, then serve until the bus goes away.

        Raises DBusError if the name is owned elsewhere or refused by policy, DBusUnavailable
        if the bus cannot be reached or is lost.
        """
        bus = await open_bus(self._address)
        # Unique names are only unique on one bus: a restarted one hands them out again, so
        # a name root had before could now be an unprivileged caller's.
        self._uid_cache.clear()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(bus.serve, self._on_message)
                self._announced = {
                    name: await self._readable_values(name, self._own_context())
                    for name in self._impls
                }
                self._bus = bus  # the object is published from here on
                await self._request_name(bus)
                log.info("D-Bus: %s owns %s at %s", bus.unique_name, self.bus_name, bus.address)
                task_status.started()
        except BaseExceptionGroup as group:
            single = unwrap_single(group)
            if single is None:
                raise
            raise single from single.__cause__
        finally:
            self._bus = None
            self._nursery = None
            with trio.CancelScope(shield=True):
                await bus.aclose()

    async def _request_name(self, bus: BusConnection) -> None:
        try:
            (result,) = await bus.bus_call(
                "RequestName", "su", self.bus_name, NAME_FLAG_DO_NOT_QUEUE
            )
        except c.DBusAccessDenied as exc:
            raise DBusError(
                f"not allowed to own the D-Bus name {self.bus_name} (bus policy): {exc.message}"
            ) from exc
        if result not in (NAME_PRIMARY_OWNER, NAME_ALREADY_OWNER):
            raise DBusError(
                f"the D-Bus name {self.bus_name} is already owned by another process"
                " (is another instance running?)"
            )

    async def emit_signal(self, interface: str, name: str, signature: str, *args: Any) -> None:
        """Broadcast a signal from our object; it must match the definition if there is one."""
        impl = self._impls.get(interface)
        definition = impl.definition if impl else self._standard.get(interface)
        defined = definition.signal(name) if definition else None
        if defined is not None and defined.signature != signature:
            raise ValueError(
                f"signal {interface}.{name} has signature {defined.signature!r}, not {signature!r}"
            )
        bus = self._bus
        if bus is None:
            raise DBusUnavailable(f"cannot emit {name}: not connected to the bus")
        emitter = DBusAddress(self.object_path, interface=interface)
        await bus.send(new_signal(emitter, name, signature or None, tuple(args)))

    # -- dispatch ---------------------------------------------------------------------------

    def _on_message(self, msg: Message) -> None:
        if msg.header.message_type is not MessageType.method_call or self._nursery is None:
            return  # signals (NameAcquired...) and stray messages need no answer
        sender = str(msg.header.fields.get(HeaderFields.sender, ""))
        if not self._by_sender.try_enter(sender):
            self._nursery.start_soon(self._send_busy, msg)
            return
        self._nursery.start_soon(self._admit, msg, sender)

    async def _send_busy(self, msg: Message) -> None:
        await self._send_reply(msg, _error(msg, c.ERR_LIMITS_EXCEEDED, c.BUSY_MESSAGE))

    async def _admit(self, msg: Message, sender: str) -> None:
        """Run the call within its caller's share: one uid's flood never busies another uid."""
        try:
            try:
                uid = await self._uid_lookup(sender)
            except Exception as exc:  # a lookup that fails must not cost the server
                log.debug("D-Bus: uid lookup for %s failed: %s", sender, exc)
                uid = None
            key: tuple[str, object] = ("uid", uid) if uid is not None else ("sender", sender)
            if not self._by_caller.try_enter(key):
                await self._send_busy(msg)
                return
            try:
                await self._handle_call(msg)
            finally:
                self._by_caller.leave(key)
        finally:
            self._by_sender.leave(sender)

    async def _handle_call(self, msg: Message) -> None:
        try:
            reply = await self._dispatch(msg)
        except DBusMethodError as exc:
            reply = _error(msg, exc.name, exc.message)
        except Exception as exc:
            reply = _error(msg, c.ERR_FAILED, str(exc) or type(exc).__name__)
            self._log_failure(msg, exc)
        try:
            size = len(reply.serialise(serial=1))  # catch a handler's ill-typed result here
        except Exception as exc:
            sig = reply.header.fields.get(HeaderFields.signature, "")
            reply = _error(msg, c.ERR_FAILED, f"reply does not match signature {sig!r}")
            self._log_failure(msg, exc)
        else:
            if size > self.max_reply:
                member = msg.header.fields.get(HeaderFields.member, "?")
                text = f"reply to {member} would be {size} bytes; limit {self.max_reply}"
                log.warning("D-Bus: %s (refused)", text)
                reply = _error(msg, c.ERR_LIMITS_EXCEEDED, text)
        await self._send_reply(msg, reply)

    async def _send_reply(self, msg: Message, reply: Message) -> None:
        if msg.header.flags & MessageFlag.no_reply_expected:
            return
        bus = self._bus
        if bus is None:
            return
        with contextlib.suppress(DBusUnavailable):  # the receive loop reports a lost bus
            await bus.send(reply)

    def _log_failure(self, msg: Message, exc: Exception) -> None:
        fields = msg.header.fields
        key = (
            f"{fields.get(HeaderFields.interface)}.{fields.get(HeaderFields.member)}",
            type(exc).__name__,
        )
        if key in self._logged_failures:
            log.debug("D-Bus %s failed again: %s", key[0], exc)
            return
        if len(self._logged_failures) < 256:
            self._logged_failures.add(key)
        log.error("D-Bus %s failed: %s", key[0], exc, exc_info=exc)

    async def _dispatch(self, msg: Message) -> Message:
        fields = msg.header.fields
        path = fields.get(HeaderFields.path, "")
        iface_name = fields.get(HeaderFields.interface)
        member = str(fields.get(HeaderFields.member, ""))
        iface, method = self._lookup(iface_name, member)
        if fields.get(HeaderFields.signature, "") != method.in_signature:
            raise DBusMethodError(
                c.ERR_INVALID_ARGS,
                f"{member} expects signature {method.in_signature!r},"
                f" got {fields.get(HeaderFields.signature, '')!r}",
            )
        check_args(method, tuple(msg.body), self._max_string)
        ctx = CallContext(str(fields.get(HeaderFields.sender, "")), self._uid_lookup)
        if iface.name == "org.freedesktop.DBus.Peer":
            return await self._peer(msg, member)
        if iface.name == "org.freedesktop.DBus.Introspectable":
            xml = self.introspection_xml() if path == self.object_path else None
            xml = xml or parent_node_xml(self.object_path, path)
            if xml is None:
                raise DBusMethodError(c.ERR_UNKNOWN_OBJECT, f"no object at {path}")
            return new_method_return(msg, "s", (xml,))
        if path != self.object_path:
            raise DBusMethodError(c.ERR_UNKNOWN_OBJECT, f"no object at {path}")
        if iface.name == "org.freedesktop.DBus.Properties":
            return await self._properties(msg, ctx, member, tuple(msg.body))
        result = await self._impls[iface.name].methods[member](ctx, *msg.body)
        if result is None:
            result = ()
        return new_method_return(msg, method.out_signature or None, tuple(result))

    def _lookup(self, iface_name: str | None, member: str) -> tuple[Interface, Method]:
        candidates = (*self._definitions, *STANDARD_INTERFACES)
        if iface_name is not None:
            found = self._impls.get(iface_name)
            iface = found.definition if found else self._standard.get(iface_name)
            if iface is None:
                raise DBusMethodError(c.ERR_UNKNOWN_INTERFACE, f"no interface {iface_name}")
            candidates = (iface,)
        for iface in candidates:
            method = iface.method(member)
            if method is not None:
                return iface, method
        where = iface_name or self.object_path
        raise DBusMethodError(c.ERR_UNKNOWN_METHOD, f"no method {member!r} in {where}")

    async def _peer(self, msg: Message, member: str) -> Message:
        if member == "Ping":
            return new_method_return(msg)
        for path in MACHINE_ID_FILES:
            try:
                machine_id = path.read_text().strip()
            except OSError:
                continue
            if machine_id:
                return new_method_return(msg, "s", (machine_id,))
        raise DBusMethodError(c.ERR_FAILED, "no machine id available")

    # -- properties -------------------------------------------------------------------------

    def _property(self, iface_name: str, name: str) -> tuple[Property, PropertyImpl]:
        impl = self._impls.get(iface_name)
        if impl is None:
            raise DBusMethodError(c.ERR_UNKNOWN_INTERFACE, f"no interface {iface_name}")
        prop = impl.definition.property(name)
        if prop is None:
            raise DBusMethodError(c.ERR_UNKNOWN_PROPERTY, f"no property {name} in {iface_name}")
        return prop, impl.properties[name]

    async def _properties(
        self, msg: Message, ctx: CallContext, member: str, body: tuple[Any, ...]
    ) -> Message:
        if member == "Get":
            prop, impl = self._property(body[0], body[1])
            if not prop.readable:
                raise DBusMethodError(c.ERR_INVALID_ARGS, f"Property '{prop.name}' is not readable")
            return new_method_return(msg, "v", ((prop.signature, await impl.getter(ctx)),))
        if member == "GetAll":
            if body[0] not in self._impls and body[0] not in self._standard:
                raise DBusMethodError(c.ERR_UNKNOWN_INTERFACE, f"no interface {body[0]}")
            return new_method_return(msg, "a{sv}", (await self._readable_values(body[0], ctx),))
        # Set
        prop, impl = self._property(body[0], body[1])
        if not prop.writable or impl.setter is None:  # GDBus's answer, word for word
            raise DBusMethodError(c.ERR_INVALID_ARGS, f"Property '{prop.name}' is not writable")
        signature, value = body[2]
        if signature != prop.signature:
            raise DBusMethodError(
                c.ERR_INVALID_ARGS,
                f"property {prop.name} has type {prop.signature!r}, not {signature!r}",
            )
        check_strings(prop.name, value, self._max_string)
        if not await ctx.caller_is_root():
            raise DBusMethodError(c.ERR_ACCESS_DENIED, f"only root may set {prop.name}")
        await impl.setter(ctx, value)
        await self.announce_properties(body[0])  # setting tron also changes log_level: both
        return new_method_return(msg)

    async def announce_properties(self, iface_name: str) -> None:
        """Emit PropertiesChanged for what changed in ``iface_name`` since subscribers last
        heard: after a Set, and after changes made elsewhere (a daemon's config reload).

        The comparison is with the last announcement, so a change seen both by a Set and by
        a daemon's watcher is announced once.
        """
        if self._bus is None:
            return  # off the bus: the next connection takes a fresh baseline
        async with self._announcing:
            now = await self._readable_values(iface_name, self._own_context())
            last = self._announced.get(iface_name, {})
            changed = {k: v for k, v in now.items() if last.get(k) != v}
            self._announced[iface_name] = now
            if changed:
                await self.emit_signal(PROPERTIES.name, "PropertiesChanged", "sa{sv}as",
                                       iface_name, changed, [])  # fmt: skip

    def _own_context(self) -> CallContext:
        """The context of reads the server makes itself (announcements are public)."""
        return CallContext("", self._uid_lookup)

    async def _readable_values(self, iface_name: str, ctx: CallContext) -> dict[str, Any]:
        found = self._impls.get(iface_name)
        values: dict[str, tuple[str, Any]] = {}
        if found is None:
            return values
        for prop in found.definition.properties:
            if prop.readable:
                values[prop.name] = (prop.signature, await found.properties[prop.name].getter(ctx))
        return values

    async def _bus_uid_lookup(self, sender: str) -> int | None:
        """The caller's uid from the bus daemon (trustworthy: taken from SO_PEERCRED)."""
        if sender in self._uid_cache:
            return self._uid_cache[sender]
        bus = self._bus
        if bus is None or not sender:
            return None
        try:
            (uid,) = await bus.bus_call("GetConnectionUnixUser", "s", sender)
        except DBusError as exc:
            log.debug("D-Bus: cannot get the uid of %s: %s", sender, exc)
            return None
        if len(self._uid_cache) >= UID_CACHE_SIZE:
            self._uid_cache.clear()
        self._uid_cache[sender] = int(uid)
        return int(uid)
