"""The stafd and stacd D-Bus interfaces as data (upstream nvme-stas 2.x, reference §3.1-3.3).

One definition feeds the server's dispatch and argument checks, the introspection XML and the
clients, so the three cannot drift apart. Only attrs is imported: the ctl tools load this.
"""

from __future__ import annotations

from typing import Literal

import attrs

from stas.constants import TID_ARG_NAMES

PropertyAccess = Literal["read", "write", "readwrite"]


@attrs.frozen
class Arg:
    """One named, typed argument of a method or signal."""

    name: str
    signature: str


@attrs.frozen
class Method:
    """A method: ``in_args`` are what the caller sends, ``out_args`` what the reply carries."""

    name: str
    in_args: tuple[Arg, ...] = ()
    out_args: tuple[Arg, ...] = ()

    @property
    def in_signature(self) -> str:
        return "".join(a.signature for a in self.in_args)

    @property
    def out_signature(self) -> str:
        return "".join(a.signature for a in self.out_args)


@attrs.frozen
class Signal:
    """A signal and its arguments, in emission order."""

    name: str
    args: tuple[Arg, ...] = ()

    @property
    def signature(self) -> str:
        return "".join(a.signature for a in self.args)


@attrs.frozen
class Property:
    """A property; ``access`` uses the introspection spelling (read, write, readwrite)."""

    name: str
    signature: str
    access: PropertyAccess = "read"

    @property
    def readable(self) -> bool:
        return self.access in ("read", "readwrite")

    @property
    def writable(self) -> bool:
        return self.access in ("write", "readwrite")


@attrs.frozen
class Interface:
    """A named interface; members are kept in declaration order for the XML."""

    name: str
    methods: tuple[Method, ...] = ()
    signals: tuple[Signal, ...] = ()
    properties: tuple[Property, ...] = ()

    def method(self, name: str) -> Method | None:
        return next((m for m in self.methods if m.name == name), None)

    def signal(self, name: str) -> Signal | None:
        return next((s for s in self.signals if s.name == name), None)

    def property(self, name: str) -> Property | None:
        return next((p for p in self.properties if p.name == name), None)


@attrs.frozen
class Service:
    """A daemon's published object: bus name, object path and interfaces (debug first)."""

    bus_name: str
    object_path: str
    interfaces: tuple[Interface, ...]

    def interface(self, name: str) -> Interface:
        for iface in self.interfaces:
            if iface.name == name:
                return iface
        raise KeyError(f"{self.bus_name} has no interface {name!r}")

    @property
    def main_interface(self) -> str:
        return self.bus_name

    @property
    def debug_interface(self) -> str:
        return f"{self.bus_name}.debug"

    def find_method(self, name: str) -> tuple[Interface, Method]:
        """The interface and method called ``name`` (first match, as dispatch does)."""
        for iface in self.interfaces:
            method = iface.method(name)
            if method is not None:
                return iface, method
        raise KeyError(f"{self.bus_name} has no method {name!r}")


def _s(*names: str) -> tuple[Arg, ...]:
    return tuple(Arg(n, "s") for n in names)


# The seven strings that identify a controller, in the order every method and signal uses.
TID_ARGS = _s(*TID_ARG_NAMES)
DETAILED = (Arg("detailed", "b"),)
CONTROLLER_LIST = (Arg("controller_list", "aa{ss}"),)


def debug_interface(bus_name: str) -> Interface:
    """The ``<bus_name>.debug`` interface, identical for stafd and stacd (§3.2)."""
    return Interface(
        name=f"{bus_name}.debug",
        methods=(
            Method("process_info", out_args=(Arg("info_json", "s"),)),
            Method("controller_info", in_args=TID_ARGS, out_args=(Arg("info_json", "s"),)),
        ),
        properties=(
            Property("tron", "b", "readwrite"),
            Property("log_level", "s", "read"),
        ),
    )


STAFD_BUS_NAME = "org.nvmexpress.staf"
STACD_BUS_NAME = "org.nvmexpress.stac"

STAFD = Service(
    bus_name=STAFD_BUS_NAME,
    object_path="/org/nvmexpress/staf",
    interfaces=(
        debug_interface(STAFD_BUS_NAME),
        Interface(
            name=STAFD_BUS_NAME,
            methods=(
                Method("list_controllers", in_args=DETAILED, out_args=CONTROLLER_LIST),
                Method("get_log_pages", in_args=TID_ARGS, out_args=(Arg("log_pages", "aa{ss}"),)),
                Method(
                    "get_all_log_pages",
                    in_args=DETAILED,
                    out_args=(Arg("log_pages_json", "s"),),
                ),
            ),
            signals=(
                Signal("log_pages_changed", (*TID_ARGS, Arg("device", "s"))),
                Signal("dc_removed"),
            ),
        ),
    ),
)

STACD = Service(
    bus_name=STACD_BUS_NAME,
    object_path="/org/nvmexpress/stac",
    interfaces=(
        debug_interface(STACD_BUS_NAME),
        Interface(
            name=STACD_BUS_NAME,
            methods=(Method("list_controllers", in_args=DETAILED, out_args=CONTROLLER_LIST),),
        ),
    ),
)

# The standard interfaces every object server implements itself (D-Bus specification).
INTROSPECTABLE = Interface(
    name="org.freedesktop.DBus.Introspectable",
    methods=(Method("Introspect", out_args=(Arg("xml_data", "s"),)),),
)
PROPERTIES = Interface(
    name="org.freedesktop.DBus.Properties",
    methods=(
        Method(
            "Get",
            in_args=(Arg("interface_name", "s"), Arg("property_name", "s")),
            out_args=(Arg("value", "v"),),
        ),
        Method(
            "GetAll",
            in_args=(Arg("interface_name", "s"),),
            out_args=(Arg("properties", "a{sv}"),),
        ),
        Method(
            "Set",
            in_args=(Arg("interface_name", "s"), Arg("property_name", "s"), Arg("value", "v")),
        ),
    ),
    signals=(  # emitted when a Set changes values (GDBus objects do; stafctl tron/troff)
        Signal(
            "PropertiesChanged",
            (
                Arg("interface_name", "s"),
                Arg("changed_properties", "a{sv}"),
                Arg("invalidated_properties", "as"),
            ),
        ),
    ),
)
PEER = Interface(
    name="org.freedesktop.DBus.Peer",
    methods=(Method("Ping"), Method("GetMachineId", out_args=(Arg("machine_uuid", "s"),))),
)
STANDARD_INTERFACES: tuple[Interface, ...] = (INTROSPECTABLE, PROPERTIES, PEER)
