"""Trio client of stafd, for stacd: method calls, stafd's signals and its comings and goings.

Everything stacd must react to arrives as one ordered stream of events on a memory channel,
so the consumer (stacd's stafd-client actor) needs no callbacks and no locking.

Nothing is lost silently. Signals are queued (``SIGNAL_BUFFER``) between the bus reader, which
cannot wait, and the consumer, which may be slow. When the queue is full a signal has to be
dropped; the client then asks the bus who owns stafd's name now (a ``NameOwnerChanged`` may be
among the dropped) and sends ``SignalsLost``, on which the consumer fetches everything again.
Any fetch made after the drop was noticed sees stafd's state at least as new as the dropped
signal's, so the resync covers it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from jeepney import DBusAddress, HeaderFields, Message, MessageType, new_method_call
from jeepney.bus_messages import MatchRule

from stas.dbus.common import DBusUnavailable
from stas.dbus.connection import BusConnection, open_bus, unwrap_single
from stas.dbus.idl import STAFD, Service
from stas.messages import (
    DcRemoved,
    LogPagesChanged,
    SignalsLost,
    StafdAppeared,
    StafdEvent,
    StafdVanished,
    Tid,
)

# The events are part of stacd's contract (stas.messages_stacd); named here for older imports.
__all__ = [
    "DcRemoved",
    "LogPagesChanged",
    "SignalsLost",
    "StafdAppeared",
    "StafdClient",
    "StafdEvent",
    "StafdVanished",
    "open_stafd_client",
]

log = logging.getLogger(__name__)

SIGNAL_BUFFER = 1024
DEFAULT_TIMEOUT = 25.0
BUS_NAME = "org.freedesktop.DBus"


class StafdClient:
    """Calls into stafd; ``owner`` is its current unique name (None while it is away)."""

    def __init__(self, bus: BusConnection, service: Service, timeout: float | None) -> None:
        self._bus = bus
        self.service = service
        self.timeout = timeout
        self.owner: str | None = None

    async def call(self, method: str, *args: Any) -> tuple[Any, ...]:
        """Call a stafd method by name (signature from the idl); DBusUnavailable if away."""
        iface, definition = self.service.find_method(method)
        target = DBusAddress(
            self.service.object_path, bus_name=self.service.bus_name, interface=iface.name
        )
        msg = new_method_call(target, method, definition.in_signature or None, tuple(args))
        return await self._bus.call_checked(msg, timeout=self.timeout)

    async def get_all_log_pages(self, detailed: bool = True) -> str:
        (text,) = await self.call("get_all_log_pages", detailed)
        return str(text)

    async def get_log_pages(self, dc: Tid) -> list[dict[str, str]]:
        (pages,) = await self.call("get_log_pages", *dc.dbus_args())
        return list(pages)

    async def list_controllers(self, detailed: bool = False) -> list[dict[str, str]]:
        (controllers,) = await self.call("list_controllers", detailed)
        return list(controllers)


def _match_rules(service: Service) -> list[str]:
    owner_rule = MatchRule(
        type="signal",
        sender=BUS_NAME,
        interface=BUS_NAME,
        member="NameOwnerChanged",
        path="/org/freedesktop/DBus",
    )
    owner_rule.add_arg_condition(0, service.bus_name)
    signal_rule = MatchRule(
        type="signal",
        sender=service.bus_name,
        interface=service.main_interface,
        path=service.object_path,
    )
    return [owner_rule.serialise(), signal_rule.serialise()]


def _to_events(client: StafdClient, msg: Message) -> list[StafdEvent]:
    """Translate one received signal into events, tracking the owner to drop duplicates."""
    fields = msg.header.fields
    member = fields.get(HeaderFields.member)
    body = tuple(msg.body)
    service = client.service
    if fields.get(HeaderFields.interface) == BUS_NAME and member == "NameOwnerChanged":
        if fields.get(HeaderFields.sender) != BUS_NAME:
            return []  # only the bus itself may announce owners
        if len(body) != 3 or body[0] != service.bus_name:
            return []
        return _owner_changed(client, body[2] or None)
    if (
        fields.get(HeaderFields.interface) != service.main_interface
        or fields.get(HeaderFields.path) != service.object_path
        or fields.get(HeaderFields.sender) != client.owner
    ):
        return []
    definition = service.interface(service.main_interface).signal(str(member))
    if definition is None or fields.get(HeaderFields.signature, "") != definition.signature:
        log.debug("ignoring unexpected signal %s from stafd", member)
        return []
    if member == "log_pages_changed":  # the signature is checked above: seven strings, device
        return [LogPagesChanged(Tid.from_dbus_args(body), str(body[7]))]
    if member == "dc_removed":
        return [DcRemoved()]
    return []


def _owner_changed(client: StafdClient, owner: str | None) -> list[StafdEvent]:
    """Events for stafd's name moving to ``owner`` (None: nobody); updates ``client.owner``."""
    if owner == client.owner:
        return []
    events: list[StafdEvent] = []
    if client.owner is not None:
        events.append(StafdVanished())
    client.owner = owner
    if owner is not None:
        events.append(StafdAppeared(owner))
    return events


async def _name_owner(bus: BusConnection, name: str) -> str | None:
    try:
        (owner,) = await bus.bus_call("GetNameOwner", "s", name)
    except DBusUnavailable:  # NameHasNoOwner maps here; a lost bus fails elsewhere
        return None
    return str(owner) or None


@asynccontextmanager
async def open_stafd_client(
    events: trio.MemorySendChannel[StafdEvent],
    *,
    address: str | None = None,
    service: Service = STAFD,
    timeout: float | None = DEFAULT_TIMEOUT,
    buffer: int = SIGNAL_BUFFER,
) -> AsyncIterator[StafdClient]:
    """Connect to the bus, subscribe, and stream stafd events into ``events``.

    If stafd is already running, the first event is StafdAppeared. Raises DBusUnavailable
    if the bus cannot be reached or is lost. ``SignalsLost`` follows any dropped signal.
    """
    bus = await open_bus(address)
    signals_in, signals_out = trio.open_memory_channel[Message](buffer)
    client = StafdClient(bus, service, timeout)
    dropped = [0]  # since the last SignalsLost

    def on_message(msg: Message) -> None:
        if msg.header.message_type is not MessageType.signal:
            return  # nobody should call us; a caller gets no reply and times out
        try:
            signals_in.send_nowait(msg)
        except trio.WouldBlock:
            if dropped[0] == 0:
                member = msg.header.fields.get(HeaderFields.member)
                log.warning("stafd event backlog full (dropped %s); will fetch everything", member)
            dropped[0] += 1

    async def forward() -> None:
        # The queue is full whenever a drop happens, so a message always follows a drop.
        async for msg in signals_out:
            for event in _to_events(client, msg):
                await events.send(event)
            if dropped[0]:
                lost, dropped[0] = dropped[0], 0
                for event in _owner_changed(client, await _name_owner(bus, service.bus_name)):
                    await events.send(event)
                await events.send(SignalsLost(lost))

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(bus.serve, on_message)
            for rule in _match_rules(service):
                await bus.bus_call("AddMatch", "s", rule)
            owner = await _name_owner(bus, service.bus_name)
            if owner and client.owner is None:
                client.owner = owner
                await events.send(StafdAppeared(owner))
            nursery.start_soon(forward)
            yield client
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        single = unwrap_single(group)
        if single is None:
            raise
        raise single from single.__cause__
    finally:
        with trio.CancelScope(shield=True):
            await bus.aclose()
