"""How a daemon binds its handlers to interface definitions, and the checks on call arguments.

Separate from the server loop so handler authors see only the small API they implement.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs

from stas.dbus import common as c
from stas.dbus.idl import Interface, Method, Service

MAX_STRING = 4096  # longest string argument accepted from a caller

UidLookup = Callable[[str], Awaitable[int | None]]
Handler = Callable[..., Awaitable[tuple[Any, ...] | None]]  # None: no out-arguments


class DBusMethodError(Exception):
    """Raised by a handler to answer with a specific D-Bus error name and message."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


@attrs.frozen
class CallContext:
    """Who is calling: the sender's unique name, and its uid (looked up on demand, cached)."""

    sender: str
    _uid_lookup: UidLookup

    async def caller_uid(self) -> int | None:
        return await self._uid_lookup(self.sender)

    async def caller_is_root(self) -> bool:
        return await self.caller_uid() == 0


@attrs.frozen
class PropertyImpl:
    """How to read a property and (optionally) change it; the server checks root for Set."""

    getter: Callable[[CallContext], Awaitable[Any]]
    setter: Callable[[CallContext, Any], Awaitable[None]] | None = None


@attrs.frozen
class InterfaceImpl:
    """An interface definition bound to its method handlers and property implementations."""

    definition: Interface
    methods: Mapping[str, Handler] = attrs.field(factory=dict)
    properties: Mapping[str, PropertyImpl] = attrs.field(factory=dict)

    def check_complete(self) -> None:
        """Refuse wiring mistakes at start-up rather than at the first call."""
        d = self.definition
        missing = [m.name for m in d.methods if m.name not in self.methods]
        missing += [p.name for p in d.properties if p.name not in self.properties]
        missing += [
            f"{p.name} (setter)"
            for p in d.properties
            if p.writable and p.name in self.properties and self.properties[p.name].setter is None
        ]
        extra = [n for n in self.methods if d.method(n) is None]
        extra += [n for n in self.properties if d.property(n) is None]
        if missing or extra:
            raise ValueError(
                f"interface {d.name}: missing implementations {missing}, undefined {extra}"
            )


def bind_service(
    service: Service,
    methods: Mapping[str, Handler],
    properties: Mapping[str, PropertyImpl],
) -> list[InterfaceImpl]:
    """Distribute handlers over the service's interfaces by member name."""
    return [
        InterfaceImpl(
            iface,
            {m.name: methods[m.name] for m in iface.methods if m.name in methods},
            {p.name: properties[p.name] for p in iface.properties if p.name in properties},
        )
        for iface in service.interfaces
    ]


def check_args(method: Method, body: tuple[Any, ...], max_string: int = MAX_STRING) -> None:
    """Validate a call's body against ``method``; raise DBusMethodError(InvalidArgs)."""
    if len(body) != len(method.in_args):
        raise DBusMethodError(
            c.ERR_INVALID_ARGS,
            f"{method.name} takes {len(method.in_args)} arguments, got {len(body)}",
        )
    for arg, value in zip(method.in_args, body, strict=True):
        if arg.signature == "b" and not isinstance(value, bool):
            raise DBusMethodError(c.ERR_INVALID_ARGS, f"argument {arg.name} must be a boolean")
        check_strings(arg.name, value, max_string)


def check_strings(name: str, value: Any, max_string: int) -> None:
    if isinstance(value, str):
        if len(value) > max_string:
            raise DBusMethodError(
                c.ERR_INVALID_ARGS,
                f"argument {name} is longer than {max_string} characters ({len(value)})",
            )
    elif isinstance(value, list | tuple):
        for item in value:
            check_strings(name, item, max_string)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_strings(name, key, max_string)
            check_strings(name, item, max_string)
