"""The shared vocabulary: a log page entry typed once (Dlpe), the Tid's conversions, one
networking module (stas.net) and the constants."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stas import net
from stas.config import parse_service_config
from stas.constants import TID_ARG_NAMES, TID_KEYS
from stas.dbus.idl import TID_ARG_NAMES as IDL_TID_ARG_NAMES
from stas.kernel.api import KernelController
from stas.messages import DcLogPages, Dlpe, Tid, parse_dlpes
from tests.helpers.entries import HOSTNQN, dc_tid, dlpe, entry

TEXT = st.text(max_size=12)


@given(st.dictionaries(TEXT, TEXT | st.integers() | st.none(), max_size=10))
def test_any_dict_parses_to_an_entry_or_none_never_raises(raw: dict) -> None:
    e = Dlpe.parse(raw)
    known = ("trtype", "adrfam", "traddr", "trsvcid", "subnqn", "subtype", "eflags")
    if any(not isinstance(raw.get(k, ""), str) for k in known):
        assert e is None
    else:
        assert e is not None and e.transport == raw.get("trtype", "")
        assert e.as_dict() == {k: str(v) for k, v in raw.items()}  # shown as text, as before


@given(st.integers(min_value=0, max_value=0xFFFF))
def test_ncc_is_eflags_bit_2(eflags: int) -> None:
    assert entry("a", eflags=str(eflags)).ncc is bool(eflags & 4)


def test_untrusted_values_are_dropped_and_bad_eflags_read_as_zero() -> None:
    assert Dlpe.parse(["not", "a", "dict"]) is None
    assert Dlpe.parse({"traddr": 1}) is None
    assert entry("a", eflags="x").eflags == 0
    assert parse_dlpes([dlpe("a"), {"subnqn": None}, entry("b")]) == (entry("a"), entry("b"))
    assert DcLogPages(dc_tid(), (dlpe("a"),)).dlpes == (entry("a"),)  # raw dicts parsed once


def test_an_entry_reached_through_its_dc_inherits_the_host_side() -> None:
    dc = Tid("tcp", "10.0.0.1", "8009", "nqn.d", "10.0.0.9", "eth0", "")
    got = Tid.from_dlpe(entry("io", "10.0.0.2"), dc, ignore_iface=False, host_nqn=HOSTNQN)
    assert got == Tid("tcp", "10.0.0.2", "4420", "io", "10.0.0.9", "eth0", HOSTNQN)
    assert Tid.from_dlpe(entry("io"), dc, ignore_iface=True).host_iface == ""
    rdma = Tid.from_dlpe(entry("io", trtype="rdma"), dc, ignore_iface=False)
    assert (rdma.host_traddr, rdma.host_iface) == ("", "")  # another transport: not inherited


def test_tid_round_trips_through_dbus_args_dicts_and_the_kernel() -> None:
    t = Tid("tcp", "::1", "8009", "nqn.x", "::2", "lo", "nqn.h")
    assert Tid.from_dbus_args(t.dbus_args()) == t
    assert Tid.from_dict(t.as_dict()) == t
    assert list(t.as_dict()) == list(TID_KEYS)
    assert TID_ARG_NAMES == IDL_TID_ARG_NAMES  # D-Bus argument names in the same order
    k = KernelController("nvme1", "tcp", "::1", "8009", "nqn.x", "::2", "lo", hostnqn="nqn.h")
    assert Tid.from_kernel(k) == t


def test_a_controller_line_becomes_a_tid_with_the_system_host_nqn() -> None:
    text = "[Controllers]\ncontroller=transport=tcp;traddr=::1;nqn=nqn.s;host-iface=lo\n"
    config, _ = parse_service_config(text, "stacd")
    (spec,) = config.controllers
    assert Tid.from_spec(spec, ignore_iface=False, host_nqn=HOSTNQN) == Tid(
        "tcp", "::1", "8009", "nqn.s", "", "lo", HOSTNQN
    )
    assert Tid.from_spec(spec, ignore_iface=True, host_nqn="").host_iface == ""


def test_one_rule_for_ip_families_and_usable_addresses() -> None:
    assert [net.ip_version(a) for a in ("1.2.3.4", "fe80::1%eth0", "::ffff:1.2.3.4", "host")] == [
        4,
        6,
        6,
        None,
    ]
    assert net.normalise_ip("::ffff:1.2.3.4") == (4, "1.2.3.4")
    assert net.usable_address("::ffff:1.2.3.4", (4,))
    assert not net.usable_address("0.0.0.0", (4, 6)) and not net.usable_address("::", (4, 6))
    assert not net.usable_address("name", (4, 6)) and not net.usable_address("::1", (4,))
    assert net.endpoint("fe80::1", 8009, "eth0") == "[fe80::1]:8009 on eth0"


@given(st.integers(min_value=0, max_value=255))
def test_one_label_table_the_dbus_spelling_agrees_with_the_enum(trtype: int) -> None:
    from stas.nvme.logpage import LogPageEntry, TrType

    d = LogPageEntry(trtype=trtype, adrfam=1, subtype=2, treq=0, portid=1, cntlid=1,
                     asqsz=32, eflags=0, trsvcid="", subnqn="n", traddr="").to_dlpe()  # fmt: skip
    known = trtype in {int(t) for t in TrType}
    assert d["trtype"] == (TrType.label_of(trtype) if known else str(trtype))
    if trtype == 0:
        assert d["trtype"] == TrType.UNSPECIFIED.label == "unspecified"  # was '' in one table
