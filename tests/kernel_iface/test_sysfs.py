"""Reading /sys/class/nvme from fake trees, and matching kernel controllers for adoption."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stas.kernel.api import ConnectRequest, KernelController, controller_matches
from stas.kernel.sysfs import is_device_name, parse_address, read_controllers, read_device
from stas.messages import Tid

HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7f10"
WK = "nqn.2014-08.org.nvmexpress.discovery"


def ctrl_dir(root: Path, name: str, *children: str, **attrs: str) -> Path:
    d = root / name
    d.mkdir()
    for k, v in attrs.items():
        (d / k).write_text(v + "\n")
    for c in children:
        (d / c).mkdir()
    return d


# --- address attribute -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        (  # kernel >= 6.1, tcp
            "traddr=192.168.1.20,trsvcid=4420,src_addr=192.168.1.2",
            {"traddr": "192.168.1.20", "trsvcid": "4420", "src_addr": "192.168.1.2"},
        ),
        (  # host_traddr/host_iface given at connect, 'none' for the unset one
            "traddr=::1,trsvcid=8009,host_traddr=none,host_iface=eth0,src_addr=::1\n",
            {
                "traddr": "::1",
                "trsvcid": "8009",
                "host_traddr": "",
                "host_iface": "eth0",
                "src_addr": "::1",
            },
        ),
        ("traddr=10.0.0.1,trsvcid=4420", {"traddr": "10.0.0.1", "trsvcid": "4420"}),  # < 6.1
        (  # fc
            "traddr=nn-0x20000090fa942779:pn-0x10000090fa942779,"
            "host_traddr=nn-0x20000090fa942780:pn-0x10000090fa942780",
            {
                "traddr": "nn-0x20000090fa942779:pn-0x10000090fa942779",
                "host_traddr": "nn-0x20000090fa942780:pn-0x10000090fa942780",
            },
        ),
        ("traddr=1.2.3.4,trsvcid=none", {"traddr": "1.2.3.4", "trsvcid": ""}),
        ("0000:01:00.0", {}),  # pcie: no key=value at all
        ("", {}),
        ("traddr=a,traddr=b,bogus=1, trsvcid = 4420 ", {"traddr": "a", "trsvcid": "4420"}),
    ],
)
def test_parse_address(text: str, expected: dict[str, str]) -> None:
    assert parse_address(text) == expected


@given(st.text(max_size=300))
def test_parse_address_never_fails_and_keeps_known_keys(text: str) -> None:
    out = parse_address(text)
    assert set(out) <= {"traddr", "trsvcid", "host_traddr", "host_iface", "src_addr"}
    assert all("," not in v and "\n" not in v and v != "none" for v in out.values())


# --- controllers -------------------------------------------------------------------------------


def test_read_controllers_modern_old_and_pcie(tmp_path: Path) -> None:
    ctrl_dir(
        tmp_path,
        "nvme0",
        transport="tcp",
        subsysnqn=WK,
        address="traddr=::1,trsvcid=8009,src_addr=::1",
        cntrltype="discovery",
        dctype="cdc",
        state="live",
        hostnqn=HOSTNQN,
        hostid="0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7f10",
        model="Linux",
        serial="abc123",
    )
    ctrl_dir(  # kernel 5.15: no cntrltype, dctype, src_addr; multipath namespace below it
        tmp_path,
        "nvme2",
        "nvme2c2n1",
        "power",
        transport="tcp",
        subsysnqn="klingons",
        address="traddr=10.0.0.1,trsvcid=4420,host_traddr=none,host_iface=eth0",
        hostnqn=HOSTNQN,
        state="connecting",
    )
    ctrl_dir(tmp_path, "nvme10", "nvme10n1", transport="pcie", address="0000:01:00.0")
    ctrl_dir(tmp_path, "nvme11", transport="tcp", subsysnqn=WK)  # old kernel discovery ctrl
    (tmp_path / "nvme-fabrics").mkdir()  # /sys/class/nvme/nvme-fabrics is not a controller
    (tmp_path / "nvme-subsys0").mkdir()
    (tmp_path / "nvme3").write_text("a file, not a device directory")

    found = read_controllers(tmp_path)
    assert [c.device for c in found] == ["nvme0", "nvme2", "nvme10", "nvme11"]
    dc, old, pcie, old_dc = found
    assert dc == KernelController(
        device="nvme0",
        transport="tcp",
        traddr="::1",
        trsvcid="8009",
        subsysnqn=WK,
        src_addr="::1",
        hostnqn=HOSTNQN,
        hostid="0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7f10",
        cntrltype="discovery",
        dctype="cdc",
        state="live",
        model="Linux",
        serial="abc123",
    )
    assert dc.is_discovery_controller and not dc.is_io_controller
    assert old.is_io_controller and old.has_namespaces and not old.is_discovery_controller
    assert (old.host_iface, old.host_traddr, old.src_addr, old.cntrltype) == ("eth0", "", "", "")
    assert old.state == "connecting"
    assert pcie.has_namespaces and pcie.traddr == "" and pcie.transport == "pcie"
    assert old_dc.is_discovery_controller and not old_dc.is_io_controller


def test_missing_tree_and_single_device(tmp_path: Path) -> None:
    assert read_controllers(tmp_path / "missing") == []
    ctrl_dir(tmp_path, "nvme4", transport="loop", subsysnqn="klingons", cntrltype="io")
    assert read_device("nvme4", tmp_path) is not None
    assert read_device("nvme4", tmp_path).transport == "loop"  # type: ignore[union-attr]
    assert read_device("nvme5", tmp_path) is None
    assert read_device("../nvme4", tmp_path) is None
    assert read_device("nvme4/..", tmp_path) is None


def test_undecodable_attribute_is_replaced_not_fatal(tmp_path: Path) -> None:
    d = ctrl_dir(tmp_path, "nvme0", transport="tcp")
    (d / "model").write_bytes(b"Vendor \xff\xfe model\n")
    (c,) = read_controllers(tmp_path)
    assert c.model == "Vendor \ufffd\ufffd model"


@pytest.mark.parametrize(
    "name,ok",
    [("nvme0", True), ("nvme123", True), ("nvme01", False), ("nvme", False), ("nvme0n1", False),
     ("../nvme0", False), ("nvme-fabrics", False), ("nvme1\n", False)],
)  # fmt: skip
def test_device_names(name: str, ok: bool) -> None:
    assert is_device_name(name) is ok


# --- matching (upstream §5.9) ------------------------------------------------------------------

TCP = KernelController(
    device="nvme3",
    transport="tcp",
    traddr="::ffff:10.0.0.1",
    trsvcid="4420",
    subsysnqn="klingons",
    hostnqn=HOSTNQN,
    src_addr="10.0.0.9",
    host_iface="eth1",
    cntrltype="io",
)
KW = dict(transport="tcp", traddr="10.0.0.1", trsvcid="4420", subsysnqn="klingons", hostnqn=HOSTNQN)


@pytest.mark.parametrize(
    "changes,expected",
    [
        ({}, True),  # IPv4-mapped kernel address == plain IPv4 candidate
        ({"traddr": "::ffff:10.0.0.1"}, True),
        ({"host_traddr": "10.0.0.9", "host_iface": "eth1"}, True),
        ({"host_traddr": "::ffff:10.0.0.9"}, True),
        ({"host_traddr": "10.0.0.8"}, False),  # src_addr disagrees
        ({"host_iface": "eth2"}, False),
        ({"hostnqn": "nqn.2014-08.org.other"}, False),
        ({"trsvcid": "4421"}, False),
        ({"transport": "rdma"}, False),
        ({"subsysnqn": "starfleet"}, False),
        ({"subsysnqn": WK}, False),  # the well-known NQN only matches discovery controllers
        ({"traddr": "10.0.0.2"}, False),
        ({"traddr": "not-an-ip"}, False),
    ],
)
def test_tcp_matching_matrix(changes: dict[str, str], expected: bool) -> None:
    assert controller_matches(TCP, **(KW | changes)) is expected


def test_old_kernel_without_src_addr_matches_optimistically() -> None:
    old = KernelController(
        device="nvme1", transport="tcp", traddr="10.0.0.1", trsvcid="4420", subsysnqn="klingons"
    )
    assert controller_matches(old, **KW, host_traddr="10.0.0.9", host_iface="eth1")
    with_host = KernelController(
        device="nvme1",
        transport="tcp",
        traddr="10.0.0.1",
        trsvcid="4420",
        subsysnqn="klingons",
        host_traddr="10.0.0.9",
    )
    assert controller_matches(with_host, **KW, host_traddr="10.0.0.9")
    assert not controller_matches(with_host, **KW, host_traddr="10.0.0.7")


def test_fc_and_loop_compare_case_insensitively() -> None:
    fc = KernelController(
        device="nvme4",
        transport="fc",
        traddr="nn-0x20000090FA942779:pn-0x10000090FA942779",
        host_traddr="nn-0x20000090fa942780:pn-0x10000090fa942780",
        subsysnqn="s",
    )
    kw = dict(transport="fc", trsvcid="", subsysnqn="s", hostnqn=HOSTNQN)
    addr = "nn-0x20000090fa942779:pn-0x10000090fa942779"
    assert controller_matches(fc, traddr=addr, **kw)
    assert controller_matches(fc, traddr=addr, host_traddr=fc.host_traddr.upper(), **kw)
    assert not controller_matches(fc, traddr=addr, host_traddr="nn-0x1:pn-0x2", **kw)
    assert not controller_matches(fc, traddr="nn-0x0:pn-0x0", **kw)
    loop = KernelController(device="nvme5", transport="loop", subsysnqn="s")
    assert controller_matches(loop, transport="loop", traddr="", trsvcid="", subsysnqn="s",
                              hostnqn=HOSTNQN)  # fmt: skip


def test_unique_dc_nqn_matches_a_well_known_candidate() -> None:
    dc = KernelController(
        device="nvme0",
        transport="tcp",
        traddr="::1",
        trsvcid="8009",
        subsysnqn="nqn.1988-11.com.dell:SFSS:2:20220208134025e8",
        cntrltype="discovery",
        hostnqn=HOSTNQN,
    )
    kw = dict(transport="tcp", traddr="::1", trsvcid="8009", hostnqn=HOSTNQN)
    assert controller_matches(dc, subsysnqn=WK, **kw)
    assert controller_matches(dc, subsysnqn=dc.subsysnqn, **kw)
    assert not controller_matches(dc, subsysnqn="nqn.other", **kw)


def test_matches_method_takes_a_tid_or_a_request() -> None:
    tid = Tid("tcp", "10.0.0.1", "4420", "klingons", "10.0.0.9", "eth1", HOSTNQN)
    assert TCP.matches(tid)
    assert not TCP.matches(Tid("tcp", "10.0.0.1", "4420", "klingons", "", "", "nqn.x.other"))
    r = ConnectRequest(
        transport="tcp", traddr="10.0.0.1", trsvcid="4420", subsysnqn="klingons", hostnqn=HOSTNQN
    )
    assert TCP.matches(r)
