"""Introspection XML generated from the interface definitions in ``stas.dbus.idl``.

Generating (rather than shipping hand-written XML) keeps the advertised API and the dispatched
API identical by construction.
"""

from __future__ import annotations

from collections.abc import Iterable

from stas.dbus.idl import Arg, Interface, Service

DOCTYPE = (
    '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
    ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n'
)


def quoteattr(value: str) -> str:
    """An XML attribute value in double quotes (xml.sax.saxutils costs 13 ms of imports)."""
    escaped = (
        value.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("\n", "&#10;")
        .replace("\t", "&#9;")
    )
    return f'"{escaped}"'


def _arg(arg: Arg, direction: str | None) -> str:
    dir_attr = f" direction={quoteattr(direction)}" if direction else ""
    return f"<arg name={quoteattr(arg.name)} type={quoteattr(arg.signature)}{dir_attr}/>"


def interface_lines(iface: Interface, indent: str = "  ") -> list[str]:
    """The ``<interface>`` element of one interface: properties, methods, then signals."""
    i1, i2, i3 = indent, indent * 2, indent * 3
    lines = [f"{i1}<interface name={quoteattr(iface.name)}>"]
    for prop in iface.properties:
        lines.append(
            f"{i2}<property name={quoteattr(prop.name)} type={quoteattr(prop.signature)}"
            f" access={quoteattr(prop.access)}/>"
        )
    for method in iface.methods:
        args = [_arg(a, "in") for a in method.in_args] + [_arg(a, "out") for a in method.out_args]
        if not args:
            lines.append(f"{i2}<method name={quoteattr(method.name)}/>")
            continue
        lines.append(f"{i2}<method name={quoteattr(method.name)}>")
        lines.extend(f"{i3}{a}" for a in args)
        lines.append(f"{i2}</method>")
    for signal in iface.signals:
        if not signal.args:
            lines.append(f"{i2}<signal name={quoteattr(signal.name)}/>")
            continue
        lines.append(f"{i2}<signal name={quoteattr(signal.name)}>")
        lines.extend(f"{i3}{_arg(a, None)}" for a in signal.args)
        lines.append(f"{i2}</signal>")
    lines.append(f"{i1}</interface>")
    return lines


def node_xml(interfaces: Iterable[Interface], children: Iterable[str] = ()) -> str:
    """A complete introspection document for one object node."""
    lines = [DOCTYPE.rstrip("\n"), "<node>"]
    for iface in interfaces:
        lines.extend(interface_lines(iface))
    lines.extend(f"  <node name={quoteattr(child)}/>" for child in children)
    lines.append("</node>")
    return "\n".join(lines) + "\n"


def service_xml(service: Service, extra: Iterable[Interface] = ()) -> str:
    """The object's XML: the service interfaces (``.debug`` first), then ``extra`` ones."""
    return node_xml((*service.interfaces, *extra))


def parent_node_xml(object_path: str, parent_path: str) -> str | None:
    """XML for an ancestor of ``object_path`` (lists the next child), or None if not one.

    Lets generic browsers (busctl tree, d-feet) walk from ``/`` down to the object.
    """
    prefix = parent_path.rstrip("/") + "/"
    if parent_path == object_path or not object_path.startswith(prefix):
        return None
    child = object_path[len(prefix) :].split("/", 1)[0]
    return node_xml((), (child,))
