"""The interface definitions and the XML generated from them, without a bus."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from stas.dbus.binding import DBusMethodError, check_args
from stas.dbus.idl import STACD, STAFD, Method
from stas.dbus.introspect import parent_node_xml, service_xml

TID_SIG = "sssssss"


def signatures(xml: str) -> dict[str, dict[str, tuple[str, str]]]:
    """interface -> member -> (in signature, out signature) parsed back from the XML."""
    result: dict[str, dict[str, tuple[str, str]]] = {}
    for iface in ET.fromstring(xml.split("\n", 2)[2]).iter("interface"):
        members = result.setdefault(iface.attrib["name"], {})
        for m in iface:
            args = m.findall("arg")
            ins = "".join(a.attrib["type"] for a in args if a.attrib.get("direction") == "in")
            outs = "".join(a.attrib["type"] for a in args if a.attrib.get("direction") != "in")
            members[f"{m.tag}:{m.attrib['name']}"] = (ins, m.attrib.get("type", outs))
    return result


def test_stafd_api_matches_upstream() -> None:
    sigs = signatures(service_xml(STAFD))
    assert list(sigs) == ["org.nvmexpress.staf.debug", "org.nvmexpress.staf"]
    assert sigs["org.nvmexpress.staf.debug"] == {
        "property:tron": ("", "b"),
        "property:log_level": ("", "s"),
        "method:process_info": ("", "s"),
        "method:controller_info": (TID_SIG, "s"),
    }
    assert sigs["org.nvmexpress.staf"] == {
        "method:list_controllers": ("b", "aa{ss}"),
        "method:get_log_pages": (TID_SIG, "aa{ss}"),
        "method:get_all_log_pages": ("b", "s"),
        "signal:log_pages_changed": ("", "ssssssss"),
        "signal:dc_removed": ("", ""),
    }


def test_stacd_api_matches_upstream() -> None:
    sigs = signatures(service_xml(STACD))
    assert list(sigs) == ["org.nvmexpress.stac.debug", "org.nvmexpress.stac"]
    assert sigs["org.nvmexpress.stac"] == {"method:list_controllers": ("b", "aa{ss}")}
    assert (
        sigs["org.nvmexpress.stac.debug"]
        == signatures(service_xml(STAFD))["org.nvmexpress.staf.debug"]
    )
    assert (STACD.bus_name, STACD.object_path) == ("org.nvmexpress.stac", "/org/nvmexpress/stac")


def test_tid_argument_names_and_order() -> None:
    _, method = STAFD.find_method("get_log_pages")
    assert [a.name for a in method.in_args] == [
        "transport",
        "traddr",
        "trsvcid",
        "subsysnqn",
        "host_traddr",
        "host_iface",
        "host_nqn",
    ]
    signal = STAFD.interface("org.nvmexpress.staf").signal("log_pages_changed")
    assert signal is not None and signal.args[-1].name == "device"


def test_parent_nodes() -> None:
    assert '<node name="nvmexpress"/>' in (parent_node_xml("/org/nvmexpress/staf", "/org") or "")
    assert parent_node_xml("/org/nvmexpress/staf", "/org/nvmexpress/staf") is None
    assert parent_node_xml("/org/nvmexpress/staf", "/org/nvme") is None


def test_check_args() -> None:
    _, detailed = STAFD.find_method("list_controllers")
    check_args(detailed, (True,))
    with pytest.raises(DBusMethodError, match="detailed must be a boolean"):
        check_args(detailed, (1,))
    nested = Method("m", in_args=STAFD.find_method("get_log_pages")[1].in_args[:1])
    check_args(nested, ("x" * 4096,))
    with pytest.raises(DBusMethodError, match="transport is longer than 4096 characters"):
        check_args(nested, ("x" * 4097,))
    with pytest.raises(DBusMethodError, match="takes 1 arguments, got 2"):
        check_args(nested, ("a", "b"))
